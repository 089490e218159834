//! Capability patterns: `*` matches any run of characters (including none), everything else
//! matches itself. `llm:*` serves every model stream, `llm:llama3.2:*` every llama3.2 variant.

use std::fmt;

/// A validated capability pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Validates a pattern: non-empty, no control characters, no braces (capabilities never
    /// contain them, so a pattern with them can never match and is surely a mistake).
    pub fn new(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("pattern must not be empty".to_owned());
        }
        if text.chars().any(|c| c.is_control() || c == '{' || c == '}') {
            return Err(format!(
                "pattern {text:?} must not contain control characters, '{{' or '}}'"
            ));
        }
        Ok(Pattern(text.to_owned()))
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        glob_match(self.0.as_bytes(), text.as_bytes())
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Linear-time wildcard match with backtracking to the last `*` only (the classic greedy
/// algorithm): no exponential blow-up on patterns like `*a*a*a*b`.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<usize> = None;
    let mut star_t = 0usize;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            star_t = t;
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some(s) = star {
            p = s + 1;
            star_t += 1;
            t = star_t;
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Pattern::new(p).unwrap().matches(t)
    }

    #[test]
    fn literal_and_wildcards() {
        assert!(m("llm:*", "llm:smollm2"));
        assert!(m("llm:*", "llm:"));
        assert!(!m("llm:*", "ext:Python Tasks"));
        assert!(m("*", "ext:Python Tasks"));
        assert!(m("llm:smollm2", "llm:smollm2"));
        assert!(!m("llm:smollm2", "llm:smollm22"));
        assert!(m("llm:*:3b", "llm:llama3.2:3b"));
        assert!(!m("llm:*:3b", "llm:llama3.2:1b"));
        assert!(m("*a*a*b", "aaaaaaaaaaaaaaaaaaaab"));
        assert!(!m("*a*a*b", "aaaaaaaaaaaaaaaaaaaaa"));
        assert!(m("ext:Python*", "ext:Python Tasks"));
    }

    #[test]
    fn invalid_patterns() {
        assert!(Pattern::new("").is_err());
        assert!(Pattern::new("llm:{x}").is_err());
        assert!(Pattern::new("llm:\n").is_err());
    }
}
