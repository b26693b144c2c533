//! Splits a selector into tokens with their byte offsets, following upstream
//! `libcalico-go/lib/selector/tokenizer.AppendTokens`.

use std::fmt;

use super::{SelectorProblem, MAX_LABEL_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    Label(&'a str),
    Str(&'a str),
    Has(&'a str),
    All,
    Global,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    Not,
    And,
    Or,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    Eof,
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Label(l) => write!(f, "label {l:?}"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Has(l) => write!(f, "'has({l})'"),
            Tok::All => f.write_str("'all()'"),
            Tok::Global => f.write_str("'global()'"),
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::LBrace => f.write_str("'{'"),
            Tok::RBrace => f.write_str("'}'"),
            Tok::Comma => f.write_str("','"),
            Tok::Eq => f.write_str("'=='"),
            Tok::Ne => f.write_str("'!='"),
            Tok::Not => f.write_str("'!'"),
            Tok::And => f.write_str("'&&'"),
            Tok::Or => f.write_str("'||'"),
            Tok::In => f.write_str("'in'"),
            Tok::NotIn => f.write_str("'not in'"),
            Tok::Contains => f.write_str("'contains'"),
            Tok::StartsWith => f.write_str("'starts with'"),
            Tok::EndsWith => f.write_str("'ends with'"),
            Tok::Eof => f.write_str("the end of the selector"),
        }
    }
}

#[derive(Debug)]
pub(super) struct Token<'a> {
    pub(super) tok: Tok<'a>,
    /// Byte offset into the selector.
    pub(super) pos: usize,
}

/// A problem at a byte offset; converted to a [`SelectorError`] with a character position.
pub(super) type Located = (usize, SelectorProblem);

fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

/// Upstream skips only spaces and tabs; we also skip newlines so selectors written as YAML block
/// scalars (which end in `\n`) are accepted. Every selector valid upstream stays valid.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn skip_space(&mut self) {
        while self
            .src
            .as_bytes()
            .get(self.pos)
            .is_some_and(|&b| is_space(b))
        {
            self.pos += 1;
        }
    }

    /// Consumes `word` if it is next and is not merely the start of a longer label.
    fn eat_word(&mut self, word: &str) -> bool {
        let rest = self.rest();
        let boundary = rest
            .as_bytes()
            .get(word.len())
            .is_none_or(|&b| !is_label_char(b));
        if rest.starts_with(word) && boundary {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    /// Consumes two words with optional space between them (`starts with`, `startswith`).
    fn eat_words(&mut self, first: &str, second: &str) -> bool {
        let start = self.pos;
        if self.rest().starts_with(first) {
            self.pos += first.len();
            self.skip_space();
            if self.eat_word(second) {
                return true;
            }
        }
        self.pos = start;
        false
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn label(&mut self) -> Result<&'a str, Located> {
        let start = self.pos;
        let len = self
            .rest()
            .bytes()
            .take_while(|&b| is_label_char(b))
            .count();
        if len == 0 {
            let problem = match self.rest().chars().next() {
                Some(c) => SelectorProblem::UnexpectedChar(c),
                None => SelectorProblem::Expected {
                    expected: "a label",
                    found: None,
                },
            };
            return Err((start, problem));
        }
        if len > MAX_LABEL_LEN {
            return Err((start, SelectorProblem::LabelTooLong));
        }
        self.pos += len;
        Ok(&self.src[start..self.pos])
    }

    /// After `has(` / `all(` / `global(`: optional space, then `)`.
    fn close_paren(&mut self, what: &'static str) -> Result<(), Located> {
        self.skip_space();
        if self.eat(")") {
            Ok(())
        } else {
            Err((self.pos, self.expected_here(what)))
        }
    }

    fn expected_here(&self, expected: &'static str) -> SelectorProblem {
        let found = self.rest().chars().next().map(|c| format!("{c:?}"));
        SelectorProblem::Expected { expected, found }
    }
}

pub(super) fn tokenize(src: &str) -> Result<Vec<Token<'_>>, Located> {
    let mut lx = Lexer { src, pos: 0 };
    let mut out: Vec<Token<'_>> = Vec::new();
    loop {
        lx.skip_space();
        let pos = lx.pos;
        let Some(&b) = src.as_bytes().get(pos) else {
            out.push(Token { tok: Tok::Eof, pos });
            return Ok(out);
        };
        let after_label = matches!(
            out.last(),
            Some(Token {
                tok: Tok::Label(_),
                ..
            })
        );
        let tok = match b {
            b'(' | b')' | b'{' | b'}' | b',' => {
                lx.pos += 1;
                match b {
                    b'(' => Tok::LParen,
                    b')' => Tok::RParen,
                    b'{' => Tok::LBrace,
                    b'}' => Tok::RBrace,
                    _ => Tok::Comma,
                }
            }
            b'"' | b'\'' => {
                let body = &src[pos + 1..];
                let end = body
                    .find(b as char)
                    .ok_or((pos, SelectorProblem::UnterminatedString))?;
                lx.pos = pos + 1 + end + 1;
                Tok::Str(&body[..end])
            }
            b'=' if lx.eat("==") => Tok::Eq,
            b'=' => {
                return Err((
                    pos,
                    SelectorProblem::Expected {
                        expected: "'=='",
                        found: Some("'='".into()),
                    },
                ))
            }
            b'!' if lx.eat("!=") => Tok::Ne,
            b'!' => {
                lx.pos += 1;
                Tok::Not
            }
            b'&' if lx.eat("&&") => Tok::And,
            b'&' => {
                return Err((
                    pos,
                    SelectorProblem::Expected {
                        expected: "'&&'",
                        found: Some("'&'".into()),
                    },
                ))
            }
            b'|' if lx.eat("||") => Tok::Or,
            b'|' => {
                return Err((
                    pos,
                    SelectorProblem::Expected {
                        expected: "'||'",
                        found: Some("'|'".into()),
                    },
                ))
            }
            // Upstream only looks for an operator word right after a label; elsewhere the same
            // words are ordinary labels (a label may be called `in`).
            _ if after_label => {
                if lx.eat_word("contains") {
                    Tok::Contains
                } else if lx.eat_words("starts", "with") {
                    Tok::StartsWith
                } else if lx.eat_words("ends", "with") {
                    Tok::EndsWith
                } else if lx.eat_words("not", "in") {
                    Tok::NotIn
                } else if lx.eat_word("in") {
                    Tok::In
                } else {
                    return Err((pos, lx.expected_here(EXPECTED_OPERATOR)));
                }
            }
            _ if lx.eat("has(") => {
                lx.skip_space();
                let label = lx.label()?;
                lx.close_paren("')' after has(label")?;
                Tok::Has(label)
            }
            _ if lx.eat("all(") => {
                lx.close_paren("')' after all(")?;
                Tok::All
            }
            _ if lx.eat("global(") => {
                lx.close_paren("')' after global(")?;
                Tok::Global
            }
            _ => Tok::Label(lx.label()?),
        };
        out.push(Token { tok, pos });
    }
}

pub(super) const EXPECTED_OPERATOR: &str =
    "an operator (==, !=, in, not in, contains, starts with, ends with) after the label";
