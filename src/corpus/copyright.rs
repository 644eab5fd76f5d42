//! The licence of a file of a Debian package, from the package's `debian/copyright`
//! (`usr/share/doc/PACKAGE/copyright`).
//!
//! Machine-readable files (DEP-5, a `Format:` header) are parsed: `Files:` patterns are matched
//! against the installed path, where a pattern may match the whole path or any tail of it that
//! starts at a folder boundary (upstream paths such as `stereo/bell.oga` are installed as
//! `usr/share/sounds/freedesktop/stereo/bell.oga`); `*` matches any characters, `/` included,
//! and `?` one character; the last matching paragraph wins (DEP-5's rule). A file that no
//! paragraph names has no stated licence. Free-form files (Wesnoth's) are not parsed: the
//! sources file then states the package's licence, read by a person from that file.

/// One `Files:` paragraph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesParagraph {
    pub patterns: Vec<String>,
    /// The short licence name (first line of `License:`), e.g. `GPL-2+`, `CC-BY-SA-3.0`.
    pub licence: String,
}

/// A parsed machine-readable copyright file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copyright {
    pub paragraphs: Vec<FilesParagraph>,
}

impl Copyright {
    /// Parses a DEP-5 file; `None` when the text is not machine-readable (no `Format:` field in
    /// its first paragraph).
    pub fn parse(text: &str) -> Option<Copyright> {
        let paragraphs: Vec<Vec<(String, String)>> = split_paragraphs(text);
        let header = paragraphs.first()?;
        if !header.iter().any(|(k, _)| k.eq_ignore_ascii_case("format")) {
            return None;
        }
        let mut out = Vec::new();
        for para in &paragraphs[1..] {
            let files = para.iter().find(|(k, _)| k.eq_ignore_ascii_case("files"));
            let licence = para.iter().find(|(k, _)| k.eq_ignore_ascii_case("license"));
            if let (Some((_, files)), Some((_, licence))) = (files, licence) {
                let short = licence
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                out.push(FilesParagraph {
                    patterns: files.split_whitespace().map(str::to_string).collect(),
                    licence: short,
                });
            }
        }
        Some(Copyright { paragraphs: out })
    }

    /// The licence of an installed path (relative, `/`-separated), if any paragraph names it.
    pub fn licence_of(&self, path: &str) -> Option<&str> {
        self.paragraphs
            .iter()
            .rev()
            .find(|p| p.patterns.iter().any(|pat| matches_path(pat, path)))
            .map(|p| p.licence.as_str())
    }
}

/// Paragraphs of `Field: value` entries; continuation lines (leading space) are appended to
/// the value on new lines.
fn split_paragraphs(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, value)) = cur.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            cur.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether `pattern` matches `path` or a tail of it starting after a `/`.
pub fn matches_path(pattern: &str, path: &str) -> bool {
    let pattern = pattern.trim_start_matches("./");
    let p: Vec<char> = pattern.chars().collect();
    let mut start = 0;
    loop {
        let tail: Vec<char> = path[start..].chars().collect();
        if glob(&p, &tail) {
            return true;
        }
        match path[start..].find('/') {
            Some(i) => start += i + 1,
            None => return false,
        }
    }
}

fn glob(p: &[char], s: &[char]) -> bool {
    // Iterative wildcard matching with backtracking on the last '*'.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sound-theme-freedesktop

Files: *
Copyright: someone
License: GPL-2+

Files: stereo/bell.oga stereo/complete.oga
 stereo/trash-empty.oga
Copyright: Dr. Richard Boulanger et al
License: CC-BY-3.0

Files: debian/*
Copyright: 2012 Laurent Bigonville
License: GPL-2+

License: GPL-2+
 This program is free software.
";

    #[test]
    fn last_matching_paragraph_wins_and_tails_match() {
        let c = Copyright::parse(TEXT).unwrap();
        assert_eq!(c.paragraphs.len(), 3);
        let p = "usr/share/sounds/freedesktop/stereo/bell.oga";
        assert_eq!(c.licence_of(p), Some("CC-BY-3.0"));
        // Continuation lines carry patterns too.
        assert_eq!(
            c.licence_of("usr/share/sounds/freedesktop/stereo/trash-empty.oga"),
            Some("CC-BY-3.0")
        );
        assert_eq!(
            c.licence_of("usr/share/sounds/freedesktop/stereo/message.oga"),
            Some("GPL-2+")
        );
        // Tails start at folder boundaries only.
        assert!(!matches_path(
            "stereo/bell.oga",
            "usr/share/xstereo/bell.oga"
        ));
        assert!(matches_path("*", "a/b/c"));
        assert!(matches_path(
            "stamps/*.ogg",
            "usr/share/tuxpaint/stamps/a/b.ogg"
        ));
        assert!(matches_path("b?ll.oga", "x/bell.oga"));
    }

    #[test]
    fn unnamed_files_have_no_licence_and_free_form_is_not_parsed() {
        let t = TEXT.replace("Files: *\nCopyright: someone\nLicense: GPL-2+\n\n", "");
        let c = Copyright::parse(&t).unwrap();
        assert_eq!(
            c.licence_of("usr/share/sounds/freedesktop/stereo/dialog-warning.oga"),
            None
        );
        assert!(
            Copyright::parse("This package was debianized by someone.\n\nLicense: GPL\n").is_none()
        );
    }
}
