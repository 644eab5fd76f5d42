//! Bearer and admin tokens: where they are read from (a file, an environment variable) and how
//! they are kept (SHA-256 digests) and compared (in constant time).

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token must be a non-empty run of visible ASCII (what an HTTP header can carry).
fn check_token(t: &str, where_: &str) -> Result<(), String> {
    if t.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        // The token itself is never echoed.
        Err(format!(
            "{where_}: a token may hold only visible ASCII characters"
        ))
    }
}

/// The tokens of a token file (config `key`; an empty path is none, one token a line) and of
/// an environment variable's value (separated by commas or whitespace). A source that is set
/// but holds no token is an error that says how to `unset` it instead; errors name the key or
/// the variable, never a token.
pub fn token_sources(
    (key, file): (&str, &std::path::Path),
    (var, value): (&str, Option<String>),
    unset: &str,
) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    if !file.as_os_str().is_empty() {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("{key}: cannot read {}: {e}", file.display()))?;
        let from_file =
            parse_token_file(&text).map_err(|e| format!("{key}: {}: {e}", file.display()))?;
        if from_file.is_empty() {
            return Err(format!(
                "{key}: {} holds no token (one a line; # starts a comment)",
                file.display()
            ));
        }
        tokens.extend(from_file);
    }
    if let Some(v) = value {
        let from_env = parse_token_list(&v).map_err(|e| format!("{var}: {e}"))?;
        if from_env.is_empty() {
            return Err(format!(
                "{var}: set but holds no token (unset it to {unset})"
            ));
        }
        tokens.extend(from_env);
    }
    Ok(tokens)
}

/// Tokens of a file: one a line, surrounding whitespace trimmed; blank lines and lines
/// starting with `#` are skipped.
pub fn parse_token_file(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        check_token(t, &format!("line {}", i + 1))?;
        out.push(t.to_owned());
    }
    Ok(out)
}

/// Tokens of an environment variable: separated by commas or whitespace.
pub fn parse_token_list(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, t) in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .enumerate()
    {
        check_token(t, &format!("token {}", i + 1))?;
        out.push(t.to_owned());
    }
    Ok(out)
}

/// The accepted tokens, as SHA-256 digests (so that every comparison is between two 32-byte
/// strings, in constant time, whatever the presented token's length).
#[derive(Clone)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} redacted)", self.digests.len())
    }
}

impl Tokens {
    /// These tokens and `other`'s.
    pub fn and(mut self, other: &Tokens) -> Self {
        self.digests.extend_from_slice(&other.digests);
        self
    }

    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            digests: tokens
                .into_iter()
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the tokens. Compares against every token, each in
    /// constant time, without stopping at a match.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let d: [u8; 32] = Sha256::digest(presented).into();
        let mut found = subtle::Choice::from(0u8);
        for t in &self.digests {
            found |= t.ct_eq(&d);
        }
        found.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_accept_only_their_own() {
        let t = Tokens::new(["alpha-1", "beta-2"]);
        assert!(t.accepts(b"alpha-1"));
        assert!(t.accepts(b"beta-2"));
        assert!(!t.accepts(b"alpha-"));
        assert!(!t.accepts(b"alpha-12"));
        assert!(!t.accepts(b""));
        assert_eq!(format!("{t:?}"), "Tokens(2 redacted)");
    }

    #[test]
    fn token_sources_parse_and_refuse_without_echoing() {
        assert_eq!(
            parse_token_file("# ops\n\n  tok-a  \ntok-b\n").expect("parse"),
            vec!["tok-a", "tok-b"]
        );
        assert_eq!(
            parse_token_list("a, b c,,").expect("parse"),
            vec!["a", "b", "c"]
        );
        let e = parse_token_file("ok\nbad\u{7f}tok\n").unwrap_err();
        assert_eq!(e, "line 2: a token may hold only visible ASCII characters");
        assert!(!e.contains("bad"));
    }
}
