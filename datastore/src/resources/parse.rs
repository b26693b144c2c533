//! Parsing user-supplied resources: one or more YAML (or JSON) documents, each an object with
//! `apiVersion`, `kind`, `metadata` and `spec`, or a `kind: List` holding `items`.
//! Errors say which document, which object and which field was wrong.

use std::fmt;

use serde::Deserialize;

use crate::codec;
use crate::error::Result as DsResult;
use crate::meta::{Object, ObjectMeta, Spec};
use crate::validation::ValidationErrors;

use super::*;

macro_rules! any_resource {
    ($($variant:ident => $spec:ty, user: $user:expr;)*) => {
        /// A resource of any kind Trellis stores.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AnyResource {
            $($variant(Object<$spec>),)*
        }

        impl AnyResource {
            /// Every kind name, as written in `kind:`.
            pub const KINDS: &'static [&'static str] = &[$(<$spec as Spec>::KIND,)*];

            pub fn kind(&self) -> &'static str {
                match self { $(Self::$variant(_) => <$spec as Spec>::KIND,)* }
            }

            pub fn metadata(&self) -> &ObjectMeta {
                match self { $(Self::$variant(o) => &o.metadata,)* }
            }

            /// Datastore key of the object.
            pub fn key(&self) -> String {
                match self { $(Self::$variant(o) => o.key(),)* }
            }

            pub fn validate(&self) -> Result<(), ValidationErrors> {
                match self { $(Self::$variant(o) => o.validate(),)* }
            }

            /// Bytes to store at [`Self::key`].
            pub fn encode(&self) -> DsResult<Vec<u8>> {
                match self { $(Self::$variant(o) => codec::encode_object(o),)* }
            }

            pub fn to_json(&self) -> serde_json::Value {
                match self {
                    $(Self::$variant(o) => serde_json::to_value(o).expect("resources serialize"),)*
                }
            }

            /// Whether users create this kind (`trellisctl apply`); IPAM blocks, affinities and
            /// handles are written by the IPAM code only.
            pub fn user_managed(kind: &str) -> bool {
                match kind { $(k if k == <$spec as Spec>::KIND => $user,)* _ => false }
            }

            /// Key prefix under which objects of `kind` are stored.
            pub fn key_prefix(kind: &str) -> Option<&'static str> {
                match kind { $(k if k == <$spec as Spec>::KIND => Some(<$spec as Spec>::KEY_PREFIX),)* _ => None }
            }

            /// Whether `kind` is namespaced.
            pub fn namespaced(kind: &str) -> Option<bool> {
                match kind { $(k if k == <$spec as Spec>::KIND => Some(<$spec as Spec>::NAMESPACED),)* _ => None }
            }

            /// Decodes a stored value of `kind`.
            pub fn decode(kind: &str, kv: &crate::kv::KeyValue) -> DsResult<Self> {
                match kind {
                    $(k if k == <$spec as Spec>::KIND => Ok(Self::$variant(codec::decode_object::<$spec>(kv)?.value)),)*
                    other => Err(crate::DatastoreError::Codec { key: kv.key.clone(), reason: format!("unknown kind {other}") }),
                }
            }

            /// Builds a resource of `kind` from a JSON value; the error names the field path.
            fn from_value(kind: &str, value: serde_json::Value) -> Result<Self, String> {
                match kind {
                    $(k if k == <$spec as Spec>::KIND => {
                        serde_path_to_error::deserialize::<_, Object<$spec>>(value)
                            .map(Self::$variant)
                            .map_err(|e| path_message(&e.path().to_string(), e.inner()))
                    })*
                    other => Err(format!(
                        "kind: unknown kind {other:?}; expected one of {}",
                        Self::KINDS.join(", ")
                    )),
                }
            }
        }
    };
}

any_resource! {
    IpPool => IpPoolSpec, user: true;
    Node => NodeSpec, user: true;
    IpamConfig => IpamConfigSpec, user: true;
    IpamBlock => IpamBlockSpec, user: false;
    BlockAffinity => BlockAffinitySpec, user: false;
    IpamHandle => IpamHandleSpec, user: false;
    WorkloadEndpoint => WorkloadEndpointSpec, user: true;
    BgpPeer => BgpPeerSpec, user: true;
    BgpConfiguration => BgpConfigurationSpec, user: true;
    FelixConfiguration => FelixConfigurationSpec, user: true;
    NetworkPolicy => NetworkPolicySpec, user: true;
    GlobalNetworkPolicy => GlobalNetworkPolicySpec, user: true;
    Namespace => NamespaceSpec, user: true;
}

impl AnyResource {
    /// `IPPool default` or `NetworkPolicy prod/allow-web`.
    pub fn describe(&self) -> String {
        let m = self.metadata();
        match &m.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind(), m.name),
            None => format!("{} {}", self.kind(), m.name),
        }
    }
}

fn path_message(path: &str, inner: &dyn fmt::Display) -> String {
    if path.is_empty() || path == "." {
        inner.to_string()
    } else {
        format!("{path}: {inner}")
    }
}

/// Why a document could not be turned into a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// File name or `-` for standard input.
    pub source: String,
    /// 1-based document number within the source.
    pub document: usize,
    /// `Kind name` when they could be read.
    pub object: Option<String>,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.source, self.document)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses every document in `text`. `source` names the input in errors. Nothing is validated
/// beyond the schema; call [`AnyResource::validate`] on each result.
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<AnyResource>, ParseError> {
    Ok(parse_documents_numbered(text, source)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Like [`parse_documents`], with the 1-based document number each resource came from, so later
/// errors (validation) can point at it too.
pub fn parse_documents_numbered(
    text: &str,
    source: &str,
) -> Result<Vec<(usize, AnyResource)>, ParseError> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let err = |object: Option<String>, message: String| ParseError {
            source: source.to_string(),
            document,
            object,
            message,
        };
        let value = serde_json::Value::deserialize(doc)
            .map_err(|e| err(None, format!("not valid YAML/JSON: {e}")))?;
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        let items = match value.get("kind").and_then(|k| k.as_str()) {
            Some("List") => match value.get("items") {
                Some(serde_json::Value::Array(items)) => items.clone(),
                _ => {
                    return Err(err(
                        None,
                        "items: a List must have an array of items".into(),
                    ))
                }
            },
            _ => vec![value],
        };
        for item in items {
            out.push((
                document,
                parse_one(item).map_err(|(object, message)| err(object, message))?,
            ));
        }
    }
    Ok(out)
}

fn parse_one(value: serde_json::Value) -> Result<AnyResource, (Option<String>, String)> {
    let obj = value.as_object().ok_or((
        None,
        "expected a mapping with apiVersion, kind, metadata and spec".into(),
    ))?;
    let kind = match obj.get("kind") {
        Some(serde_json::Value::String(k)) => k.clone(),
        Some(_) => return Err((None, "kind: must be a string".into())),
        None => return Err((None, "kind: missing".into())),
    };
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let described = Some(match &name {
        Some(n) => format!("{kind} {n}"),
        None => kind.clone(),
    });
    if !obj.contains_key("apiVersion") {
        return Err((described, "apiVersion: missing".into()));
    }
    let mut value = value;
    // A Kubernetes object may come without `spec` when every field defaults (e.g. Namespace).
    if let Some(map) = value.as_object_mut() {
        map.entry("spec")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        map.remove("status");
    }
    AnyResource::from_value(&kind, value).map_err(|m| (described, m))
}
