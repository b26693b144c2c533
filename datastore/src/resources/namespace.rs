//! Kubernetes `v1` Namespace. Trellis needs namespaces for their labels, which
//! `namespaceSelector`s of NetworkPolicy and GlobalNetworkPolicy match against.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::label_selector::null_as_default;
use crate::meta::{Object, ObjectMeta, Spec};
use crate::validation::{check_dns_label, check_dns_subdomain, check_label_key, ValidationErrors};

pub type Namespace = Object<NamespaceSpec>;

/// The label the apiserver puts on every namespace (since Kubernetes 1.21), holding its name, so
/// policies can select namespaces by name.
pub const METADATA_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Finalizer names allowed without a `domain/` prefix (upstream `IsStandardFinalizerName`).
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

/// Nothing but `finalizers`, accepted so that `kubectl get ns -o yaml` output applies as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSpec {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub finalizers: Vec<String>,
}

impl Spec for NamespaceSpec {
    const KIND: &'static str = "Namespace";
    const API_VERSION: &'static str = "v1";
    const KEY_PREFIX: &'static str = "namespaces/";

    fn validate(&self, meta: &ObjectMeta, errs: &mut ValidationErrors) {
        // Namespace names are DNS labels (`ValidateNamespaceName`), stricter than the subdomain
        // ObjectMeta checks; only add the label error when the subdomain check passed, so one
        // bad name yields one message.
        let mut subdomain = ValidationErrors::new();
        check_dns_subdomain(&mut subdomain, "metadata.name", &meta.name);
        if subdomain.is_empty() {
            check_dns_label(errs, "metadata.name", &meta.name);
        }
        for (i, f) in self.finalizers.iter().enumerate() {
            let field = format!("spec.finalizers[{i}]");
            // `validateFinalizerName`: a qualified name, and without a prefix a standard one.
            check_label_key(errs, &field, f);
            if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()) {
                let reason = "is not a standard finalizer, so it needs a domain/ prefix";
                errs.add(field, format!("{f:?} {reason}"));
            }
        }
    }
}

impl Namespace {
    /// The labels selectors see: the stored labels plus [`METADATA_NAME_LABEL`] set to the name,
    /// overriding any value written, as the apiserver's defaulting does.
    pub fn effective_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.metadata.labels.clone();
        labels.insert(METADATA_NAME_LABEL.to_string(), self.metadata.name.clone());
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{parse_documents, AnyResource};

    fn parse(yaml: &str) -> Namespace {
        match parse_documents(yaml, "ns.yaml")
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0)
        {
            AnyResource::Namespace(ns) => ns,
            other => panic!("expected a Namespace, got {}", other.describe()),
        }
    }

    #[test]
    fn minimal_namespace() {
        let ns = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  labels:\n    team: a\n",
        );
        ns.validate().unwrap();
        assert_eq!(ns.key(), "namespaces/prod");
        assert_eq!(ns.spec, NamespaceSpec::default());
        assert_eq!(
            serde_json::to_value(&ns).unwrap()["spec"],
            serde_json::json!({})
        );
    }

    #[test]
    fn kubectl_output_applies() {
        let ns = parse(
            r#"
apiVersion: v1
kind: Namespace
metadata:
  name: kube-system
  uid: 1d2c
  resourceVersion: "12"
  creationTimestamp: "2024-01-01T00:00:00Z"
  labels:
    kubernetes.io/metadata.name: kube-system
spec:
  finalizers:
  - kubernetes
status:
  phase: Active
"#,
        );
        ns.validate().unwrap();
        assert_eq!(ns.spec.finalizers, vec!["kubernetes"]);
    }

    #[test]
    fn name_must_be_a_dns_label() {
        for bad in ["a.b", &"x".repeat(64)] {
            let ns = Namespace::new(ObjectMeta::named(bad), NamespaceSpec::default());
            let e = ns.validate().unwrap_err();
            assert!(e.mentions("metadata.name"), "{e}");
            assert_eq!(e.errors.len(), 1, "one message per bad name: {e}");
        }
        let ns = Namespace::new(ObjectMeta::named("Bad_Name"), NamespaceSpec::default());
        assert_eq!(ns.validate().unwrap_err().errors.len(), 1);
    }

    #[test]
    fn cluster_scoped() {
        let ns = Namespace::new(
            ObjectMeta::namespaced("default", "prod"),
            NamespaceSpec::default(),
        );
        assert!(ns.validate().unwrap_err().mentions("metadata.namespace"));
    }

    #[test]
    fn finalizers_are_validated() {
        let spec = NamespaceSpec {
            finalizers: vec![
                "kubernetes".into(),
                "example.com/cleanup".into(),
                "custom".into(),
                "bad name/x".into(),
            ],
        };
        let e = Namespace::new(ObjectMeta::named("prod"), spec)
            .validate()
            .unwrap_err();
        assert!(
            !e.mentions("spec.finalizers[0]") && !e.mentions("spec.finalizers[1]"),
            "{e}"
        );
        assert!(
            e.mentions("spec.finalizers[2]") && e.mentions("spec.finalizers[3]"),
            "{e}"
        );
    }

    #[test]
    fn unknown_spec_fields_are_rejected() {
        let err = parse_documents(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nspec: {finalizer: []}\n",
            "ns.yaml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("finalizer"), "{err}");
    }

    #[test]
    fn effective_labels_carry_the_name() {
        let mut meta = ObjectMeta::named("prod");
        meta.labels.insert("team".into(), "a".into());
        meta.labels
            .insert(METADATA_NAME_LABEL.into(), "spoofed".into());
        let labels = Namespace::new(meta, NamespaceSpec::default()).effective_labels();
        assert_eq!(labels[METADATA_NAME_LABEL], "prod");
        assert_eq!(labels["team"], "a");
    }
}
