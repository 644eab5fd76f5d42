//! Client strings echoed into status messages and log lines: capped and escaped, so that a
//! 100 KB name cannot flood a message and a `\n`, `\r` or NUL cannot forge a log line.

use std::fmt;

/// The most characters of one client string that are echoed; longer ones end in `…`.
pub const ECHO_MAX_CHARS: usize = 64;

/// `s` as it may be echoed: its first [`ECHO_MAX_CHARS`] characters, escaped as by
/// [`char::escape_debug`] (control characters, quotes and backslashes), then `…` when cut.
pub fn echo(s: &str) -> Echo<'_> {
    Echo(s)
}

/// A client string to echo (see [`echo`]); formats without allocating.
#[derive(Clone, Copy)]
pub struct Echo<'a>(&'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(ECHO_MAX_CHARS) {
            fmt::Display::fmt(&c.escape_debug(), f)?;
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_strings_are_unchanged() {
        assert_eq!(echo("audio").to_string(), "audio");
        assert_eq!(echo("").to_string(), "");
        assert_eq!(echo("modèle-été").to_string(), "modèle-été");
    }

    #[test]
    fn control_characters_are_escaped() {
        let e = echo("a\nINFO forged\r\0\u{1b}[31m\t\"'\\").to_string();
        assert_eq!(e, "a\\nINFO forged\\r\\0\\u{1b}[31m\\t\\\"\\'\\\\");
        assert!(!e.chars().any(char::is_control), "{e}");
    }

    #[test]
    fn long_strings_are_capped_with_an_ellipsis() {
        let long = "x".repeat(100_000);
        let e = echo(&long).to_string();
        assert_eq!(e, format!("{}…", "x".repeat(ECHO_MAX_CHARS)));
        // Exactly at the cap: nothing cut, no ellipsis.
        let at_cap = "y".repeat(ECHO_MAX_CHARS);
        assert_eq!(echo(&at_cap).to_string(), at_cap);
        // The cap counts characters, not bytes, so multi-byte text is never split.
        let wide = "é".repeat(ECHO_MAX_CHARS + 1);
        assert_eq!(echo(&wide).to_string().chars().count(), ECHO_MAX_CHARS + 1);
    }

    #[test]
    fn a_capped_escaped_string_stays_bounded() {
        // Every character escaped to its longest form (\u{10ffff}-like) stays within a bound.
        let nasty = "\u{0}".repeat(10_000);
        let e = echo(&nasty).to_string();
        assert!(e.len() <= ECHO_MAX_CHARS * 10 + 3, "{}", e.len());
        assert_eq!(format!("{:?}", echo("a\nb")), "\"a\\nb\"");
    }
}
