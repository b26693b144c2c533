//! Recursive descent over the tokens, following upstream `parser.parseOrExpression`,
//! `parseAndExpression` and `parseOperation`: `||` binds loosest, then `&&`, then `!`.

use super::tokenizer::{Located, Tok, Token, EXPECTED_OPERATOR};
use super::{Expr, LabelOp, SelectorProblem, MAX_NESTING};

/// The whole selector: empty means `all()`, otherwise one `||` expression and nothing after it.
pub(super) fn parse(tokens: &[Token<'_>]) -> Result<Expr, Located> {
    let mut parser = Parser { tokens, next: 0 };
    if parser.peek().tok == Tok::Eof {
        return Ok(Expr::All);
    }
    let root = parser.parse_or(0)?;
    if parser.peek().tok != Tok::Eof {
        return parser.fail("'&&', '||' or the end of the selector");
    }
    Ok(root)
}

struct Parser<'t, 'a> {
    /// Always ends with `Tok::Eof`, and the parser never moves past it.
    tokens: &'t [Token<'a>],
    next: usize,
}

fn expected(expected: &'static str, found: &Tok<'_>) -> SelectorProblem {
    let found = (*found != Tok::Eof).then(|| found.to_string());
    SelectorProblem::Expected { expected, found }
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> &Token<'a> {
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> &Token<'a> {
        let i = self.next.min(self.tokens.len() - 1);
        if self.tokens[i].tok != Tok::Eof {
            self.next = i + 1;
        }
        &self.tokens[i]
    }

    fn fail<T>(&self, what: &'static str) -> Result<T, Located> {
        let t = self.peek();
        Err((t.pos, expected(what, &t.tok)))
    }

    fn parse_or(&mut self, depth: usize) -> Result<Expr, Located> {
        let mut ops = vec![self.parse_and(depth)?];
        while self.peek().tok == Tok::Or {
            self.bump();
            ops.push(self.parse_and(depth)?);
        }
        Ok(if ops.len() == 1 {
            ops.remove(0)
        } else {
            Expr::Or(ops)
        })
    }

    fn parse_and(&mut self, depth: usize) -> Result<Expr, Located> {
        let mut ops = vec![self.parse_op(depth)?];
        while self.peek().tok == Tok::And {
            self.bump();
            ops.push(self.parse_op(depth)?);
        }
        Ok(if ops.len() == 1 {
            ops.remove(0)
        } else {
            Expr::And(ops)
        })
    }

    fn parse_op(&mut self, depth: usize) -> Result<Expr, Located> {
        // A run of `!` collapses to a single negation or none.
        let mut negated = false;
        while self.peek().tok == Tok::Not {
            self.bump();
            negated = !negated;
        }
        let t = self.peek();
        let start = t.pos;
        let expr = match t.tok {
            Tok::All => {
                self.bump();
                Expr::All
            }
            Tok::Global => {
                self.bump();
                Expr::Global
            }
            Tok::Has(label) => {
                self.bump();
                Expr::Has(label.to_string())
            }
            Tok::LParen => {
                if depth >= MAX_NESTING {
                    return Err((start, SelectorProblem::TooDeep));
                }
                self.bump();
                let inner = self.parse_or(depth + 1)?;
                if self.peek().tok != Tok::RParen {
                    return self.fail("')'");
                }
                self.bump();
                inner
            }
            Tok::Label(label) => {
                self.bump();
                let op = self.parse_label_op()?;
                Expr::Label {
                    label: label.to_string(),
                    op,
                }
            }
            _ => return self.fail("a label, has(), all(), global(), '!' or '('"),
        };
        Ok(if negated {
            Expr::Not(Box::new(expr))
        } else {
            expr
        })
    }

    fn parse_label_op(&mut self) -> Result<LabelOp, Located> {
        let op = self.peek().tok.clone();
        let single: fn(String) -> LabelOp = match op {
            Tok::Eq => LabelOp::Eq,
            Tok::Ne => LabelOp::Ne,
            Tok::Contains => LabelOp::Contains,
            Tok::StartsWith => LabelOp::StartsWith,
            Tok::EndsWith => LabelOp::EndsWith,
            Tok::In | Tok::NotIn => {
                self.bump();
                let set = self.parse_set()?;
                return Ok(if op == Tok::In {
                    LabelOp::In(set)
                } else {
                    LabelOp::NotIn(set)
                });
            }
            _ => return self.fail(EXPECTED_OPERATOR),
        };
        self.bump();
        match self.peek().tok {
            Tok::Str(value) => {
                self.bump();
                Ok(single(value.to_string()))
            }
            _ => self.fail("a quoted value"),
        }
    }

    /// `{ 'a', "b" }`; upstream accepts an empty set and a trailing comma.
    fn parse_set(&mut self) -> Result<Vec<String>, Located> {
        if self.peek().tok != Tok::LBrace {
            return self.fail("'{' starting a set of quoted values");
        }
        self.bump();
        let mut values = Vec::new();
        loop {
            match self.peek().tok {
                Tok::RBrace => break,
                Tok::Str(v) => {
                    self.bump();
                    values.push(v.to_string());
                    match self.peek().tok {
                        Tok::Comma => {
                            self.bump();
                        }
                        Tok::RBrace => break,
                        _ => return self.fail("',' or '}'"),
                    }
                }
                _ => return self.fail("a quoted value or '}'"),
            }
        }
        self.bump();
        values.sort();
        values.dedup();
        Ok(values)
    }
}
