//! Kubernetes `metav1.LabelSelector` (`matchLabels` + `matchExpressions`), with the apiserver's
//! validation (`apimachinery/pkg/apis/meta/v1/validation.ValidateLabelSelector`) and the matching
//! semantics of `metav1.LabelSelectorAsSelector` + `labels.Requirement.Matches`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::validation::{check_label_key, check_label_value, ValidationErrors};

/// `{matchLabels: {...}, matchExpressions: [...]}`; all requirements are ANDed. The empty
/// selector (`{}`) matches every object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub match_labels: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// `{key, operator, values}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// Required upstream; defaulted here so a missing key is reported by validation, by field.
    #[serde(default)]
    pub key: String,
    pub operator: LabelSelectorOperator,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub values: Vec<String>,
}

/// The four operators metav1 defines; anything else fails to parse, naming the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LabelSelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// A selector requiring exactly these labels.
    pub fn from_labels<K: Into<String>, V: Into<String>>(
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            match_labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// `{}`: no requirements, so it selects everything.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` satisfies every requirement. Meant for validated selectors; an invalid
    /// one is evaluated literally (e.g. `In` with no values matches nothing) rather than refused.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Checks the selector as the apiserver does; `path` is the selector's own field path
    /// (`spec.podSelector`). Errors name `path.matchLabels[KEY]`, `path.matchExpressions[i].key`,
    /// `.operator`, `.values` or `.values[j]`.
    pub fn validate(&self, path: &str, errs: &mut ValidationErrors) {
        for (k, v) in &self.match_labels {
            // Upstream reports these at `matchLabels`; we add the key, as `metadata.labels[k]`
            // does elsewhere in Trellis, so the message points at the entry.
            let field = format!("{path}.matchLabels[{k}]");
            check_label_key(errs, &field, k);
            check_label_value(errs, &field, v);
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            r.validate(&format!("{path}.matchExpressions[{i}]"), errs);
        }
    }
}

impl LabelSelectorRequirement {
    pub fn new(key: impl Into<String>, operator: LabelSelectorOperator, values: &[&str]) -> Self {
        Self {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// `labels.Requirement.Matches`: `NotIn` and `DoesNotExist` match when the key is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            LabelSelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            LabelSelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            LabelSelectorOperator::Exists => value.is_some(),
            LabelSelectorOperator::DoesNotExist => value.is_none(),
        }
    }

    /// `ValidateLabelSelectorRequirement`.
    fn validate(&self, path: &str, errs: &mut ValidationErrors) {
        match self.operator {
            LabelSelectorOperator::In | LabelSelectorOperator::NotIn if self.values.is_empty() => {
                errs.add(
                    format!("{path}.values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                )
            }
            LabelSelectorOperator::Exists | LabelSelectorOperator::DoesNotExist
                if !self.values.is_empty() =>
            {
                errs.add(
                    format!("{path}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
            }
            _ => {}
        }
        check_label_key(errs, &format!("{path}.key"), &self.key);
        for (j, v) in self.values.iter().enumerate() {
            check_label_value(errs, &format!("{path}.values[{j}]"), v);
        }
    }
}

impl fmt::Display for LabelSelectorOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::Exists => "Exists",
            Self::DoesNotExist => "DoesNotExist",
        })
    }
}

/// kubectl's rendering (`metav1.FormatLabelSelector`): requirements sorted by key,
/// `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, joined by commas; `<none>` when empty.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<(&str, String)> = self
            .match_labels
            .iter()
            .map(|(k, v)| (k.as_str(), format!("{k}={v}")))
            .collect();
        for r in &self.match_expressions {
            let mut values: Vec<&str> = r.values.iter().map(String::as_str).collect();
            values.sort_unstable();
            values.dedup();
            let text = match r.operator {
                LabelSelectorOperator::In => format!("{} in ({})", r.key, values.join(",")),
                LabelSelectorOperator::NotIn => format!("{} notin ({})", r.key, values.join(",")),
                LabelSelectorOperator::Exists => r.key.clone(),
                LabelSelectorOperator::DoesNotExist => format!("!{}", r.key),
            };
            parts.push((r.key.as_str(), text));
        }
        if parts.is_empty() {
            return f.write_str("<none>");
        }
        parts.sort_by(|a, b| a.0.cmp(b.0));
        let texts: Vec<String> = parts.into_iter().map(|(_, t)| t).collect();
        f.write_str(&texts.join(","))
    }
}

/// Kubernetes decodes `null` as the zero value (`podSelector:` with nothing after it in YAML
/// is `null`), where serde would otherwise reject it.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::LabelSelectorOperator::*;
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: LabelSelectorOperator, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: vec![LabelSelectorRequirement::new(key, op, values)],
            ..Default::default()
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = LabelSelector::default();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_require_equal_values() {
        let s = LabelSelector::from_labels([("app", "web"), ("tier", "fe")]);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "be")])));
        let empty_value = LabelSelector::from_labels([("a", "")]);
        assert!(empty_value.matches(&labels(&[("a", "")])));
        assert!(!empty_value.matches(&labels(&[])));
    }

    #[test]
    fn operators_follow_upstream() {
        type Pairs = &'static [(&'static str, &'static str)];
        let cases: &[(LabelSelector, Pairs, bool)] = &[
            (expr("env", In, &["a", "b"]), &[("env", "a")], true),
            (expr("env", In, &["a", "b"]), &[("env", "c")], false),
            (expr("env", In, &["a", "b"]), &[], false),
            (expr("env", NotIn, &["a"]), &[("env", "b")], true),
            (expr("env", NotIn, &["a"]), &[("env", "a")], false),
            // NotIn matches when the key is absent.
            (expr("env", NotIn, &["a"]), &[], true),
            (expr("env", Exists, &[]), &[("env", "")], true),
            (expr("env", Exists, &[]), &[("other", "x")], false),
            (expr("env", DoesNotExist, &[]), &[], true),
            (expr("env", DoesNotExist, &[]), &[("env", "x")], false),
            // Invalid but must not panic: In with no values matches nothing.
            (expr("env", In, &[]), &[("env", "")], false),
        ];
        for (sel, l, want) in cases {
            assert_eq!(sel.matches(&labels(l)), *want, "{sel} on {l:?}");
        }
    }

    #[test]
    fn requirements_are_anded() {
        let mut s = LabelSelector::from_labels([("app", "db")]);
        s.match_expressions
            .push(LabelSelectorRequirement::new("role", In, &["primary"]));
        assert!(s.matches(&labels(&[("app", "db"), ("role", "primary")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("role", "replica")])));
        assert!(!s.matches(&labels(&[("role", "primary")])));
    }

    fn errors(s: &LabelSelector) -> ValidationErrors {
        let mut errs = ValidationErrors::new();
        s.validate("spec.podSelector", &mut errs);
        errs
    }

    #[test]
    fn valid_selectors_pass() {
        let mut s = LabelSelector::from_labels([("app.kubernetes.io/name", "web"), ("empty", "")]);
        s.match_expressions = vec![
            LabelSelectorRequirement::new("env", In, &["prod", "staging"]),
            LabelSelectorRequirement::new("env", NotIn, &["dev"]),
            LabelSelectorRequirement::new("example.com/canary", Exists, &[]),
            LabelSelectorRequirement::new("legacy", DoesNotExist, &[]),
        ];
        assert!(errors(&s).is_empty(), "{}", errors(&s));
    }

    #[test]
    fn in_and_notin_need_values() {
        for op in [In, NotIn] {
            let e = errors(&expr("env", op, &[]));
            assert!(
                e.mentions("spec.podSelector.matchExpressions[0].values"),
                "{e}"
            );
        }
    }

    #[test]
    fn exists_and_doesnotexist_forbid_values() {
        for op in [Exists, DoesNotExist] {
            let e = errors(&expr("env", op, &["x"]));
            assert!(
                e.mentions("spec.podSelector.matchExpressions[0].values"),
                "{e}"
            );
        }
    }

    #[test]
    fn keys_and_values_must_be_valid_labels() {
        let e = errors(&expr("bad key", Exists, &[]));
        assert!(
            e.mentions("spec.podSelector.matchExpressions[0].key"),
            "{e}"
        );
        let e = errors(&expr("", Exists, &[]));
        assert!(
            e.mentions("spec.podSelector.matchExpressions[0].key"),
            "{e}"
        );
        let e = errors(&expr("k", In, &["ok", "not ok"]));
        assert!(
            e.mentions("spec.podSelector.matchExpressions[0].values[1]"),
            "{e}"
        );
        assert!(!e.mentions("spec.podSelector.matchExpressions[0].values[0]"));
        let e = errors(&LabelSelector::from_labels([("-bad", "v")]));
        assert!(e.mentions("spec.podSelector.matchLabels[-bad]"), "{e}");
        let e = errors(&LabelSelector::from_labels([("k", "x".repeat(64))]));
        assert!(e.mentions("spec.podSelector.matchLabels[k]"), "{e}");
    }

    #[test]
    fn yaml_schema() {
        let s: LabelSelector = serde_norway::from_str(
            "matchLabels: {app: web}\nmatchExpressions:\n\
             - {key: env, operator: In, values: [a, b]}\n- {key: x, operator: Exists}\n",
        )
        .unwrap();
        assert_eq!(
            s.match_expressions[1],
            LabelSelectorRequirement::new("x", Exists, &[])
        );
        assert_eq!(s.to_string(), "app=web,env in (a,b),x");
        let back: LabelSelector =
            serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);

        assert_eq!(
            serde_json::to_string(&LabelSelector::default()).unwrap(),
            "{}"
        );
        let nulls: LabelSelector =
            serde_json::from_str(r#"{"matchLabels":null,"matchExpressions":null}"#).unwrap();
        assert!(nulls.is_empty());
        assert!(serde_json::from_str::<LabelSelector>(r#"{"matchLabel":{}}"#).is_err());
        let bad_op = serde_json::from_str::<LabelSelector>(
            r#"{"matchExpressions":[{"key":"a","operator":"Equals"}]}"#,
        );
        assert!(bad_op.unwrap_err().to_string().contains("Equals"));
    }

    #[test]
    fn display_like_kubectl() {
        assert_eq!(LabelSelector::default().to_string(), "<none>");
        let mut s = expr("z", DoesNotExist, &[]);
        s.match_labels.insert("a".into(), "1".into());
        s.match_expressions
            .push(LabelSelectorRequirement::new("m", NotIn, &["y", "x"]));
        assert_eq!(s.to_string(), "a=1,m notin (x,y),!z");
    }
}
