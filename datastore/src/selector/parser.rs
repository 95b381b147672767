//! Recursive-descent parser from tokens to the normalised selector tree.
//!
//! ```text
//! selector  := <empty> | or EOF
//! or        := and ('||' and)*
//! and       := unary ('&&' unary)*
//! unary     := '!'* primary
//! primary   := '(' or ')' | 'all' '(' ')' | 'has' '(' key ')' | key operation
//! operation := ('==' | '!=' | 'contains' | 'starts' 'with' | 'ends' 'with') string
//!            | ('in' | 'not' 'in') '{' (string (',' string)* ','?)? '}'
//! ```
//!
//! Only parentheses recurse, and their depth is bounded; runs of `!`, `&&` and `||` are loops.

use std::collections::BTreeSet;

use super::lexer::{Lexer, Tok, Token};
use super::{Expr, SelectorError, MAX_NESTING_DEPTH, MAX_SELECTOR_LEN};

pub(super) fn parse(text: &str) -> Result<Expr, SelectorError> {
    if text.len() > MAX_SELECTOR_LEN {
        return Err(SelectorError::new(
            MAX_SELECTOR_LEN,
            format!("selector is {} bytes long; the limit is {MAX_SELECTOR_LEN}", text.len()),
        ));
    }
    let mut parser = Parser::new(text)?;
    if parser.tok.tok == Tok::Eof {
        return Ok(Expr::All);
    }
    let expr = parser.or_expr(0)?;
    if parser.tok.tok != Tok::Eof {
        return Err(parser.unexpected("'&&', '||' or end of input"));
    }
    Ok(expr)
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    /// The one token of lookahead.
    tok: Token<'a>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self, SelectorError> {
        let mut lexer = Lexer::new(text);
        let tok = lexer.next_token()?;
        Ok(Self { lexer, tok })
    }

    /// Moves past the current token. Only called once the current token has been accepted, so
    /// that a lexical error further on never hides a syntax error at the current token.
    fn bump(&mut self) -> Result<(), SelectorError> {
        self.tok = self.lexer.next_token()?;
        Ok(())
    }

    fn unexpected(&self, expected: &str) -> SelectorError {
        SelectorError::new(
            self.tok.pos,
            format!("expected {expected} but found {}", self.tok.tok.describe()),
        )
    }

    fn expect(&mut self, tok: Tok<'_>, expected: &str) -> Result<(), SelectorError> {
        if self.tok.tok == tok {
            self.bump()
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn or_expr(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut parts = vec![self.and_expr(depth)?];
        while self.tok.tok == Tok::Or {
            self.bump()?;
            parts.push(self.and_expr(depth)?);
        }
        Ok(Expr::any_of(parts))
    }

    fn and_expr(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut parts = vec![self.unary(depth)?];
        while self.tok.tok == Tok::And {
            self.bump()?;
            parts.push(self.unary(depth)?);
        }
        Ok(Expr::all_of(parts))
    }

    /// Calico folds a run of `!` into one negation or none, and so does this.
    fn unary(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut negated = false;
        while self.tok.tok == Tok::Not {
            negated = !negated;
            self.bump()?;
        }
        let expr = self.primary(depth)?;
        Ok(if negated { expr.negate() } else { expr })
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        match self.tok.tok {
            Tok::LParen => {
                if depth >= MAX_NESTING_DEPTH {
                    return Err(SelectorError::new(
                        self.tok.pos,
                        format!("parentheses nested deeper than {MAX_NESTING_DEPTH} levels"),
                    ));
                }
                self.bump()?;
                let inner = self.or_expr(depth + 1)?;
                self.expect(Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::Word(word) => {
                let word_pos = self.tok.pos;
                self.bump()?;
                // A keyword only when a '(' follows; otherwise it is a label of that name.
                if self.tok.tok == Tok::LParen {
                    match word {
                        "all" => {
                            self.bump()?;
                            self.expect(Tok::RParen, "')'")?;
                            return Ok(Expr::All);
                        }
                        "has" => {
                            self.bump()?;
                            let Tok::Word(key) = self.tok.tok else {
                                return Err(self.unexpected("a label name"));
                            };
                            self.bump()?;
                            self.expect(Tok::RParen, "')'")?;
                            return Ok(Expr::Has(key.to_owned()));
                        }
                        "global" => {
                            return Err(SelectorError::new(
                                word_pos,
                                "global() is not supported: tabby has no namespace selectors",
                            ));
                        }
                        _ => {}
                    }
                }
                self.operation(word)
            }
            _ => Err(self.unexpected("a label, 'has(', 'all()', '!' or '('")),
        }
    }

    /// The operator and operand after label `key`; the current token is the operator.
    fn operation(&mut self, key: &str) -> Result<Expr, SelectorError> {
        let key = key.to_owned();
        match self.tok.tok {
            Tok::Eq => {
                self.bump()?;
                Ok(Expr::Eq(key, self.string()?))
            }
            Tok::Ne => {
                self.bump()?;
                Ok(Expr::Ne(key, self.string()?))
            }
            // Calico's tokenizer matches operator prefixes, so it also takes the run-together
            // spellings `notin`, `startswith` and `endswith`; accept them for compatibility.
            Tok::Word("in") => {
                self.bump()?;
                Ok(Expr::In(key, self.set()?))
            }
            Tok::Word("notin") => {
                self.bump()?;
                Ok(Expr::NotIn(key, self.set()?))
            }
            Tok::Word("not") => {
                self.bump()?;
                self.expect(Tok::Word("in"), "'in' after 'not'")?;
                Ok(Expr::NotIn(key, self.set()?))
            }
            Tok::Word("contains") => {
                self.bump()?;
                Ok(Expr::Contains(key, self.string()?))
            }
            Tok::Word("startswith") => {
                self.bump()?;
                Ok(Expr::StartsWith(key, self.string()?))
            }
            Tok::Word("starts") => {
                self.bump()?;
                self.expect(Tok::Word("with"), "'with' after 'starts'")?;
                Ok(Expr::StartsWith(key, self.string()?))
            }
            Tok::Word("endswith") => {
                self.bump()?;
                Ok(Expr::EndsWith(key, self.string()?))
            }
            Tok::Word("ends") => {
                self.bump()?;
                self.expect(Tok::Word("with"), "'with' after 'ends'")?;
                Ok(Expr::EndsWith(key, self.string()?))
            }
            _ => {
                const OPERATORS: &str = "==, !=, in, not in, contains, starts with, ends with";
                Err(self.unexpected(&format!("an operator ({OPERATORS}) after label '{key}'")))
            }
        }
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        let Tok::Str(value) = self.tok.tok else {
            return Err(self.unexpected("a quoted string"));
        };
        self.bump()?;
        Ok(value.to_owned())
    }

    /// `{'a', "b"}`; may be empty, and like Calico's takes a trailing comma after an item.
    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        self.expect(Tok::LBrace, "'{'")?;
        let mut values = BTreeSet::new();
        loop {
            match self.tok.tok {
                Tok::RBrace => break,
                Tok::Str(value) => {
                    values.insert(value.to_owned());
                    self.bump()?;
                }
                _ => return Err(self.unexpected("a quoted string or '}'")),
            }
            match self.tok.tok {
                Tok::Comma => self.bump()?,
                Tok::RBrace => break,
                _ => return Err(self.unexpected("',' or '}'")),
            }
        }
        self.bump()?;
        Ok(values)
    }
}
