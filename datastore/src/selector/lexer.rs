//! Splits selector text into tokens on demand, each tagged with its byte offset so that parse
//! errors can point at it.
//!
//! Keywords (`has`, `all`, `in`, `not`, `contains`, `starts`, `with`, ...) are not reserved here:
//! they lex as words, and the parser decides from their position whether a word is a label key or
//! a keyword, as Calico's tokenizer does. So `has == 'x'` compares a label named `has`.

use super::SelectorError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `!`
    Not,
    /// `&&`
    And,
    /// `||`
    Or,
    /// A string literal's content, without its quotes.
    Str(&'a str),
    /// A run of label-key characters: a key, or a keyword in keyword position.
    Word(&'a str),
    Eof,
}

impl Tok<'_> {
    /// How the token is named in "expected X but found Y" messages.
    pub(super) fn describe(self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Comma => "','".into(),
            Tok::Eq => "'=='".into(),
            Tok::Ne => "'!='".into(),
            Tok::Not => "'!'".into(),
            Tok::And => "'&&'".into(),
            Tok::Or => "'||'".into(),
            Tok::Str(s) => format!("string {:?}", abbreviate(s)),
            Tok::Word(w) => format!("'{}'", abbreviate(w)),
            Tok::Eof => "end of input".into(),
        }
    }
}

/// Keeps error messages readable when the offending token is a huge literal.
fn abbreviate(s: &str) -> String {
    const KEEP: usize = 40;
    match s.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Token<'a> {
    pub(super) tok: Tok<'a>,
    /// Byte offset of the token's first character.
    pub(super) pos: usize,
}

/// Characters of a label key in Calico's grammar. `/` admits a DNS prefix such as
/// `projectcalico.org/namespace`.
pub(super) fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

/// Calico accepts only space and tab; newlines are accepted too because selectors written in
/// YAML block scalars carry them.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

pub(super) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Self { src, pos: 0 }
    }

    pub(super) fn next_token(&mut self) -> Result<Token<'a>, SelectorError> {
        let bytes = self.src.as_bytes();
        while bytes.get(self.pos).copied().is_some_and(is_space) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(&first) = bytes.get(start) else {
            return Ok(Token { tok: Tok::Eof, pos: start });
        };
        let second = bytes.get(start + 1).copied();
        let (tok, len) = match first {
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'{' => (Tok::LBrace, 1),
            b'}' => (Tok::RBrace, 1),
            b',' => (Tok::Comma, 1),
            b'=' if second == Some(b'=') => (Tok::Eq, 2),
            b'=' => return Err(SelectorError::new(start, "expected '==' but found a single '='")),
            b'!' if second == Some(b'=') => (Tok::Ne, 2),
            b'!' => (Tok::Not, 1),
            b'&' if second == Some(b'&') => (Tok::And, 2),
            b'&' => return Err(SelectorError::new(start, "expected '&&' but found a single '&'")),
            b'|' if second == Some(b'|') => (Tok::Or, 2),
            b'|' => return Err(SelectorError::new(start, "expected '||' but found a single '|'")),
            b'"' | b'\'' => {
                let body = &self.src[start + 1..];
                let Some(end) = body.find(char::from(first)) else {
                    return Err(SelectorError::new(
                        start,
                        format!("unterminated string: no closing {}", char::from(first)),
                    ));
                };
                (Tok::Str(&body[..end]), end + 2)
            }
            _ => {
                let word_len =
                    self.src[start..].find(|c| !is_key_char(c)).unwrap_or(self.src.len() - start);
                if word_len == 0 {
                    // `start` is a char boundary: every token so far ended on an ASCII byte.
                    let bad = self.src[start..].chars().next().unwrap_or_default();
                    return Err(SelectorError::new(start, format!("unexpected character {bad:?}")));
                }
                (Tok::Word(&self.src[start..start + word_len]), word_len)
            }
        };
        self.pos = start + len;
        Ok(Token { tok, pos: start })
    }
}
