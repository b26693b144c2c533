//! Reading JSON objects field by field, so every error names its field with a path like
//! `runtimeConfig.portMappings[0].hostPort` (serde's derive would lose it). JSON `null` counts as
//! absent, as it does for Go's encoding/json.

use std::fmt;

use serde_json::{Map, Value};

/// What is wrong with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The JSON type is wrong: the content cannot be decoded (CNI error 6).
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    /// A required field is absent (CNI error 7 in a configuration).
    Missing,
    /// The value has the right type but is not acceptable (CNI error 7 in a configuration).
    Invalid(String),
}

/// One problem with one field. `path` is empty for the document itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct FieldError {
    pub path: String,
    pub problem: Problem,
}

impl FieldError {
    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            problem: Problem::Invalid(reason.into()),
        }
    }

    /// Whether the JSON type was wrong (a decoding failure) rather than the value.
    pub fn is_type_error(&self) -> bool {
        matches!(self.problem, Problem::WrongType { .. })
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        match &self.problem {
            Problem::WrongType { expected, found } => {
                write!(f, "{path}: expected {expected}, found {found}")
            }
            Problem::Missing => write!(f, "{path}: required field is missing"),
            Problem::Invalid(reason) => write!(f, "{path}: {reason}"),
        }
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn wrong_type(path: &str, expected: &'static str, v: &Value) -> FieldError {
    FieldError {
        path: path.to_string(),
        problem: Problem::WrongType {
            expected,
            found: kind(v),
        },
    }
}

pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A JSON object being read, with its path.
#[derive(Clone, Debug)]
pub(crate) struct Obj<'a> {
    pub map: &'a Map<String, Value>,
    pub path: String,
}

impl<'a> Obj<'a> {
    /// `v` as an object, or a type error at `path`.
    pub fn new(v: &'a Value, path: impl Into<String>) -> Result<Obj<'a>, FieldError> {
        let path = path.into();
        match v {
            Value::Object(map) => Ok(Obj { map, path }),
            other => Err(wrong_type(&path, "an object", other)),
        }
    }

    pub fn at(&self, key: &str) -> String {
        child(&self.path, key)
    }

    /// The value of `key`; `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn missing(&self, key: &str) -> FieldError {
        FieldError {
            path: self.at(key),
            problem: Problem::Missing,
        }
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(&self.at(key), "a string", other)),
        }
    }

    /// A string where `""` means the same as absent (Go's zero value).
    pub fn non_empty_str(&self, key: &str) -> Result<Option<&'a str>, FieldError> {
        Ok(self.str(key)?.filter(|s| !s.is_empty()))
    }

    pub fn required_str(&self, key: &str) -> Result<&'a str, FieldError> {
        self.non_empty_str(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(&self.at(key), "a boolean", other)),
        }
    }

    /// An unsigned integer no larger than `max`.
    pub fn uint(&self, key: &str, max: u64) -> Result<Option<u64>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => uint_value(v, &self.at(key), max).map(Some),
        }
    }

    pub fn u32(&self, key: &str) -> Result<Option<u32>, FieldError> {
        Ok(self.uint(key, u32::MAX.into())?.map(|n| n as u32))
    }

    pub fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, FieldError> {
        self.get(key).map(|v| Obj::new(v, self.at(key))).transpose()
    }

    pub fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(wrong_type(&self.at(key), "an array", other)),
        }
    }

    /// A list of strings; absent is empty.
    pub fn str_list(&self, key: &str) -> Result<Vec<String>, FieldError> {
        let Some(items) = self.array(key)? else {
            return Ok(Vec::new());
        };
        let path = self.at(key);
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(wrong_type(&index(&path, i), "a string", other)),
            })
            .collect()
    }

    /// A string parsed with `parse`, whose error becomes [`Problem::Invalid`]. `""` is absent.
    pub fn parsed<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, FieldError> {
        match self.non_empty_str(key)? {
            None => Ok(None),
            Some(s) => parse(s)
                .map(Some)
                .map_err(|reason| FieldError::invalid(self.at(key), reason)),
        }
    }
}

/// `v` as an unsigned integer no larger than `max`.
pub(crate) fn uint_value(v: &Value, path: &str, max: u64) -> Result<u64, FieldError> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(n) if n <= max => Ok(n),
            Some(n) => Err(FieldError::invalid(
                path,
                format!("{n} is larger than {max}"),
            )),
            None => Err(FieldError::invalid(
                path,
                format!("{n} is not a non-negative integer"),
            )),
        },
        other => Err(wrong_type(path, "an integer", other)),
    }
}

/// Parses a whole document; a syntax error is reported with its line and column.
pub(crate) fn parse_document(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}
