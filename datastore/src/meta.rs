//! Kubernetes-style object metadata and the generic resource envelope
//! (`apiVersion`, `kind`, `metadata`, `spec`) every Trellis resource is stored in.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::validation::{
    check_dns_label, check_dns_subdomain, check_label_key, check_label_value, ValidationErrors,
};

/// API group/version of Trellis' own resources.
pub const TRELLIS_API_VERSION: &str = "trellis.dev/v1";
/// API group/version of Kubernetes NetworkPolicy, accepted unchanged.
pub const NETWORKING_API_VERSION: &str = "networking.k8s.io/v1";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The datastore mod_revision the object was read at (filled on read, ignored on write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Fields Kubernetes tooling adds (generation, managedFields...), accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_fields: Option<serde_json::Value>,
}

impl ObjectMeta {
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: Some(namespace.into()),
            ..Self::default()
        }
    }

    /// Checks name, namespace presence and labels. `namespaced` says whether the kind lives in a
    /// namespace; `name_is_subdomain` whether the name must be a DNS subdomain (else a label).
    pub fn validate(&self, namespaced: bool, errs: &mut ValidationErrors) {
        check_dns_subdomain(errs, "metadata.name", &self.name);
        match (&self.namespace, namespaced) {
            (Some(ns), true) => check_dns_label(errs, "metadata.namespace", ns),
            (None, true) => {}
            (Some(ns), false) if !ns.is_empty() => errs.add(
                "metadata.namespace",
                format!("this kind is cluster-wide; remove namespace {ns:?}"),
            ),
            _ => {}
        }
        for (k, v) in &self.labels {
            check_label_key(errs, &format!("metadata.labels[{k}]"), k);
            check_label_value(errs, &format!("metadata.labels[{k}]"), v);
        }
    }
}

/// What a spec type must say about itself to be stored as a resource.
pub trait Spec:
    Serialize + DeserializeOwned + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// `kind` as users write it (`IPPool`).
    const KIND: &'static str;
    const API_VERSION: &'static str = TRELLIS_API_VERSION;
    /// Whether objects of this kind live in a namespace.
    const NAMESPACED: bool = false;
    /// Key prefix under the datastore prefix, e.g. `ippools/`.
    const KEY_PREFIX: &'static str;

    /// Checks the spec on its own (cross-object checks such as pool overlap live elsewhere).
    /// Field names in errors start with `spec.`.
    fn validate(&self, meta: &ObjectMeta, errs: &mut ValidationErrors);

    /// Key of the object relative to the datastore prefix. Namespaced kinds default to
    /// `PREFIX/NAMESPACE/NAME`, cluster kinds to `PREFIX/NAME`.
    fn key(&self, meta: &ObjectMeta) -> String {
        if Self::NAMESPACED {
            format!(
                "{}{}/{}",
                Self::KEY_PREFIX,
                meta.namespace.as_deref().unwrap_or("default"),
                meta.name
            )
        } else {
            format!("{}{}", Self::KEY_PREFIX, meta.name)
        }
    }
}

/// The envelope: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S,
}

impl<S: Spec> Object<S> {
    /// A new object with the kind's apiVersion and kind filled in.
    pub fn new(metadata: ObjectMeta, spec: S) -> Self {
        Self {
            api_version: S::API_VERSION.to_string(),
            kind: S::KIND.to_string(),
            metadata,
            spec,
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Datastore key of this object.
    pub fn key(&self) -> String {
        self.spec.key(&self.metadata)
    }

    /// Checks envelope, metadata and spec, collecting every problem.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        if self.api_version != S::API_VERSION {
            errs.add(
                "apiVersion",
                format!(
                    "must be {:?} for kind {}, got {:?}",
                    S::API_VERSION,
                    S::KIND,
                    self.api_version
                ),
            );
        }
        if self.kind != S::KIND {
            errs.add(
                "kind",
                format!("expected {:?}, got {:?}", S::KIND, self.kind),
            );
        }
        self.metadata.validate(S::NAMESPACED, &mut errs);
        self.spec.validate(&self.metadata, &mut errs);
        errs.into_result()
    }
}
