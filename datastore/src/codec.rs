//! Typed reads and writes over any [`Datastore`]: JSON values with the mod_revision they were
//! read at, so callers can write back with compare-and-swap.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{DatastoreError, Result};
use crate::kv::{Datastore, KeyValue};
use crate::meta::{Object, Spec};

/// A decoded value and the mod_revision of the key it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub key: String,
    pub value: T,
    pub revision: i64,
}

pub fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| DatastoreError::Codec {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<Versioned<T>> {
    let value = serde_json::from_slice(&kv.value).map_err(|e| DatastoreError::Codec {
        key: kv.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Versioned {
        key: kv.key.clone(),
        value,
        revision: kv.mod_revision,
    })
}

/// Decodes a stored resource and records its revision in `metadata.resourceVersion`.
pub fn decode_object<S: Spec>(kv: &KeyValue) -> Result<Versioned<Object<S>>> {
    let mut v: Versioned<Object<S>> = decode(kv)?;
    v.value.metadata.resource_version = Some(kv.mod_revision.to_string());
    Ok(v)
}

/// Encodes a resource for storage; `resourceVersion` is the store's business and is not stored.
pub fn encode_object<S: Spec>(obj: &Object<S>) -> Result<Vec<u8>> {
    let mut stored = obj.clone();
    stored.metadata.resource_version = None;
    encode(&obj.key(), &stored)
}

pub async fn get<T: DeserializeOwned>(
    ds: &dyn Datastore,
    key: &str,
) -> Result<Option<Versioned<T>>> {
    ds.get(key).await?.as_ref().map(decode).transpose()
}

/// Every value under `prefix` and the revision of the snapshot.
pub async fn list<T: DeserializeOwned>(
    ds: &dyn Datastore,
    prefix: &str,
) -> Result<(Vec<Versioned<T>>, i64)> {
    let listing = ds.list(prefix).await?;
    let items = listing
        .items
        .iter()
        .map(decode)
        .collect::<Result<Vec<_>>>()?;
    Ok((items, listing.revision))
}

pub async fn get_object<S: Spec>(
    ds: &dyn Datastore,
    key: &str,
) -> Result<Option<Versioned<Object<S>>>> {
    ds.get(key).await?.as_ref().map(decode_object).transpose()
}

pub async fn list_objects<S: Spec>(ds: &dyn Datastore) -> Result<Vec<Versioned<Object<S>>>> {
    let listing = ds.list(S::KEY_PREFIX).await?;
    listing.items.iter().map(decode_object).collect()
}
