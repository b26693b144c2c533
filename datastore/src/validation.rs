//! Validation errors that name the offending field, so `trellisctl apply` can say exactly what to
//! fix: `IPPool default: spec.blockSize: must be between 20 and 32 for an IPv4 pool, got 33`.

use std::fmt;

/// One problem with one field. `field` is a JSON-path-like location (`spec.ingress[0].ports[1].port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every problem found in one resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationErrors {
    pub errors: Vec<FieldError>,
}

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// Adds the errors of `other` with `prefix.` put before each field name.
    pub fn extend_prefixed(&mut self, prefix: &str, other: ValidationErrors) {
        for e in other.errors {
            self.errors.push(FieldError {
                field: format!("{prefix}.{}", e.field),
                reason: e.reason,
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok(())` when nothing was found, otherwise `Err(self)`.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// True if some error is about `field` (exact match); handy in tests.
    pub fn mentions(&self, field: &str) -> bool {
        self.errors.iter().any(|e| e.field == field)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// RFC 1123 DNS subdomain, as Kubernetes requires of most object names.
pub fn check_dns_subdomain(errs: &mut ValidationErrors, field: &str, value: &str) {
    if value.is_empty() {
        errs.add(field, "must not be empty");
        return;
    }
    if value.len() > 253 {
        errs.add(
            field,
            format!("must be at most 253 characters, got {}", value.len()),
        );
    }
    let ok = value.split('.').all(|part| {
        !part.is_empty()
            && part.len() <= 63
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    });
    if !ok {
        errs.add(
            field,
            format!(
                "{value:?} is not a valid name: lower-case letters, digits, '-' and '.', \
                 starting and ending with a letter or digit"
            ),
        );
    }
}

/// RFC 1123 DNS label (namespaces, interface-like names).
pub fn check_dns_label(errs: &mut ValidationErrors, field: &str, value: &str) {
    if value.is_empty() {
        errs.add(field, "must not be empty");
        return;
    }
    let ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        errs.add(
            field,
            format!(
                "{value:?} is not a valid DNS label: at most 63 lower-case letters, digits \
                 and '-', starting and ending with a letter or digit"
            ),
        );
    }
}

/// Kubernetes label key: optional DNS-subdomain prefix and '/', then a name of at most 63
/// alphanumerics, '-', '_' or '.', starting and ending alphanumeric.
pub fn check_label_key(errs: &mut ValidationErrors, field: &str, key: &str) {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let mut sub = ValidationErrors::new();
        check_dns_subdomain(&mut sub, field, p);
        if !sub.is_empty() {
            errs.add(
                field,
                format!("label key {key:?} has an invalid prefix {p:?}"),
            );
        }
    }
    if !is_label_name(name) {
        errs.add(
            field,
            format!(
                "label key {key:?}: name part must be 1-63 alphanumerics, '-', '_' or '.', \
                 starting and ending alphanumeric"
            ),
        );
    }
}

/// Kubernetes label value: empty, or at most 63 alphanumerics, '-', '_' or '.', starting and
/// ending alphanumeric.
pub fn check_label_value(errs: &mut ValidationErrors, field: &str, value: &str) {
    if !value.is_empty() && !is_label_name(value) {
        errs.add(
            field,
            format!(
                "label value {value:?} must be empty or 1-63 alphanumerics, '-', '_' or '.', \
                 starting and ending alphanumeric"
            ),
        );
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let mut e = ValidationErrors::new();
        check_dns_subdomain(&mut e, "metadata.name", "default-pool.v4");
        check_dns_label(&mut e, "metadata.namespace", "kube-system");
        check_label_key(&mut e, "k", "app.kubernetes.io/name");
        check_label_value(&mut e, "v", "");
        assert!(e.is_empty(), "{e}");

        check_dns_subdomain(&mut e, "metadata.name", "Bad_Name");
        check_dns_label(&mut e, "metadata.namespace", "a.b");
        check_label_key(&mut e, "labels", "-x");
        check_label_value(&mut e, "labels.x", "a b");
        assert_eq!(e.errors.len(), 4);
        assert!(e.mentions("metadata.name") && e.mentions("labels.x"));
        assert!(e.to_string().contains("Bad_Name"));
    }
}
