//! Calico selector expressions, as used by `IPPool.nodeSelector`, `GlobalNetworkPolicy.selector`
//! and `BGPPeer` selectors: `role == 'db' && !has(canary)`, `env in {'prod', 'staging'}`.
//!
//! The grammar, precedence and matching rules follow Calico's
//! `libcalico-go/lib/selector/{tokenizer,parser}` so selectors users already wrote keep meaning
//! the same thing:
//!
//! ```text
//! selector  := or? EOF                     (empty selector = all())
//! or        := and ( "||" and )*           ("||" binds loosest)
//! and       := op ( "&&" op )*
//! op        := "!"* ( "all()" | "global()" | "has(" LABEL ")" | "(" or ")"
//!                   | LABEL ( "==" | "!=" | "contains" | "starts with" | "ends with" ) STRING
//!                   | LABEL ( "in" | "not in" ) "{" ( STRING ( "," STRING )* ","? )? "}" )
//! LABEL     := [A-Za-z0-9_./-]{1,512}
//! STRING    := '...' | "..."               (no escapes; the other quote may appear inside)
//! ```
//!
//! `!` applies to one operation (`!a == 'x' && b == 'y'` is `(!(a == 'x')) && b == 'y'`), and a run
//! of `!`s collapses to one or none, as upstream does. `!=` and `not in` match when the label is
//! absent; `==`, `in`, `contains`, `starts with` and `ends with` require it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

mod parser;
mod tokenizer;

/// Longest label name Calico's tokenizer accepts (`tokenizer.MaxLabelLength`).
pub const MAX_LABEL_LEN: usize = 512;

/// Deepest parenthesis nesting accepted. Calico has no limit (Go stacks grow); we bound it so that
/// parsing, matching and printing hostile input cannot overflow the stack.
pub const MAX_NESTING: usize = 64;

/// A parsed selector. Equality is structural on the canonical tree, so `a == 'b'` equals
/// `a == "b"` and `x in {'b', 'a'}` equals `x in {"a", "b", "a"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    root: Expr,
}

/// One node of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `all()`, or the empty selector: matches everything.
    All,
    /// `global()`: in Calico it selects non-namespaced resources in a `namespaceSelector`; for
    /// label matching it matches everything, as upstream's `GlobalNode.Evaluate` does.
    Global,
    /// `has(label)`.
    Has(String),
    /// `label <op> ...`.
    Label { label: String, op: LabelOp },
    /// `!expr`.
    Not(Box<Expr>),
    /// `a && b && ...` (at least two operands).
    And(Vec<Expr>),
    /// `a || b || ...` (at least two operands).
    Or(Vec<Expr>),
}

/// The comparison of a label against literal values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LabelOp {
    Eq(String),
    Ne(String),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    /// Values sorted and deduplicated (upstream `ConvertToStringSetInPlace`).
    In(Vec<String>),
    NotIn(Vec<String>),
}

/// Why a selector did not parse: the whole selector, where (0-based character position) and what.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("selector {selector:?}: {problem} at position {position}")]
pub struct SelectorError {
    pub selector: String,
    pub position: usize,
    pub problem: SelectorProblem,
}

/// What was wrong at [`SelectorError::position`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectorProblem {
    #[error("unterminated quoted string")]
    UnterminatedString,
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    #[error("label longer than {MAX_LABEL_LEN} characters")]
    LabelTooLong,
    #[error("parentheses nested deeper than {MAX_NESTING}")]
    TooDeep,
    /// `found` is `None` at the end of the input.
    #[error("expected {expected}{}", found_suffix(.found))]
    Expected {
        expected: &'static str,
        found: Option<String>,
    },
}

impl Selector {
    /// Parses Calico selector syntax. Empty (or blank) text means `all()`.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let located = |(pos, problem)| error(text, pos, problem);
        let tokens = tokenizer::tokenize(text).map_err(located)?;
        let root = parser::parse(&tokens).map_err(located)?;
        Ok(Selector { root })
    }

    /// The selector that matches everything (`all()`).
    pub fn all() -> Selector {
        Selector { root: Expr::All }
    }

    /// Whether the selector is `all()` (also the result of parsing an empty selector).
    pub fn is_all(&self) -> bool {
        self.root == Expr::All
    }

    pub fn root(&self) -> &Expr {
        &self.root
    }

    /// Whether `global()` appears anywhere: Calico only allows it alone in a rule's
    /// `namespaceSelector`, so resource validation needs to know.
    pub fn uses_global(&self) -> bool {
        self.root.uses_global()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Matches against any label source, e.g. pod labels overlaid on namespace labels without
    /// building a merged map.
    pub fn matches_with<'a, F>(&self, lookup: F) -> bool
    where
        F: Fn(&str) -> Option<&'a str>,
    {
        self.root.eval(&lookup)
    }
}

impl Expr {
    fn eval<'a, F>(&self, lookup: &F) -> bool
    where
        F: Fn(&str) -> Option<&'a str>,
    {
        match self {
            Expr::All | Expr::Global => true,
            Expr::Has(label) => lookup(label).is_some(),
            Expr::Label { label, op } => op.eval(lookup(label)),
            Expr::Not(inner) => !inner.eval(lookup),
            Expr::And(ops) => ops.iter().all(|e| e.eval(lookup)),
            Expr::Or(ops) => ops.iter().any(|e| e.eval(lookup)),
        }
    }

    fn uses_global(&self) -> bool {
        match self {
            Expr::Global => true,
            Expr::Not(inner) => inner.uses_global(),
            Expr::And(ops) | Expr::Or(ops) => ops.iter().any(Expr::uses_global),
            _ => false,
        }
    }
}

impl LabelOp {
    /// Upstream semantics: the negative operators (`!=`, `not in`) match an absent label, every
    /// other operator requires the label to be present.
    fn eval(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (LabelOp::Ne(_) | LabelOp::NotIn(_), None) => true,
            (_, None) => false,
            (LabelOp::Eq(v), Some(x)) => x == v,
            (LabelOp::Ne(v), Some(x)) => x != v,
            (LabelOp::Contains(v), Some(x)) => x.contains(v.as_str()),
            (LabelOp::StartsWith(v), Some(x)) => x.starts_with(v.as_str()),
            (LabelOp::EndsWith(v), Some(x)) => x.ends_with(v.as_str()),
            (LabelOp::In(set), Some(x)) => set.binary_search_by(|s| s.as_str().cmp(x)).is_ok(),
            (LabelOp::NotIn(set), Some(x)) => set.binary_search_by(|s| s.as_str().cmp(x)).is_err(),
        }
    }
}

impl Default for Selector {
    fn default() -> Self {
        Selector::all()
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

/// The canonical form, identical to Calico's `Selector.String()`: single spaces around
/// operators, values in double quotes (single quotes if the value holds a `"`), set values sorted,
/// and every `&&`/`||` group in parentheses: `(a == "b" && !has(c))`.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.root, f)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Global => f.write_str("global()"),
            Expr::Has(label) => write!(f, "has({label})"),
            Expr::Label { label, op } => {
                let (word, value) = match op {
                    LabelOp::Eq(v) => ("==", v),
                    LabelOp::Ne(v) => ("!=", v),
                    LabelOp::Contains(v) => ("contains", v),
                    LabelOp::StartsWith(v) => ("starts with", v),
                    LabelOp::EndsWith(v) => ("ends with", v),
                    LabelOp::In(set) => return write_set(f, label, "in", set),
                    LabelOp::NotIn(set) => return write_set(f, label, "not in", set),
                };
                write!(f, "{label} {word} ")?;
                write_quoted(f, value)
            }
            Expr::Not(inner) => write!(f, "!{inner}"),
            Expr::And(ops) => write_joined(f, ops, " && "),
            Expr::Or(ops) => write_joined(f, ops, " || "),
        }
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    // A literal cannot hold both quote characters (there are no escapes), so one always works.
    let q = if value.contains('"') { '\'' } else { '"' };
    write!(f, "{q}{value}{q}")
}

fn write_set(f: &mut fmt::Formatter<'_>, label: &str, word: &str, set: &[String]) -> fmt::Result {
    write!(f, "{label} {word} {{")?;
    for (i, v) in set.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_quoted(f, v)?;
    }
    f.write_str("}")
}

fn write_joined(f: &mut fmt::Formatter<'_>, ops: &[Expr], sep: &str) -> fmt::Result {
    f.write_str("(")?;
    for (i, e) in ops.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{e}")?;
    }
    f.write_str(")")
}

/// Stored as its canonical text.
impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn found_suffix(found: &Option<String>) -> String {
    found
        .as_ref()
        .map(|f| format!(", found {f}"))
        .unwrap_or_default()
}

/// Turns a problem at a byte offset into the public error, with a character position.
fn error(text: &str, byte_pos: usize, problem: SelectorProblem) -> SelectorError {
    // Report characters, not bytes; positions always fall on char boundaries.
    let position = text.get(..byte_pos).map_or(byte_pos, |s| s.chars().count());
    SelectorError {
        selector: text.to_string(),
        position,
        problem,
    }
}

#[cfg(test)]
mod tests;
