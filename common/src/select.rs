//! What to back up inside an account: container name patterns, and include/exclude rules
//! on blob names. Patterns are globs: `*` matches any run of characters (including `/`),
//! `?` exactly one character; everything else matches itself.

use serde::{Deserialize, Serialize};

/// Whether `text` matches the glob `pattern`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with backtracking to the last `*`: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Include/exclude rules for blob names within a container. A blob is selected when it
/// matches at least one include rule (or there are none) and no exclude rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobFilter {
    #[serde(default)]
    pub include_prefixes: Vec<String>,
    #[serde(default)]
    pub exclude_prefixes: Vec<String>,
    #[serde(default)]
    pub include_patterns: Vec<String>,
    #[serde(default)]
    pub exclude_patterns: Vec<String>,
}

impl BlobFilter {
    pub fn is_everything(&self) -> bool {
        *self == BlobFilter::default()
    }

    pub fn matches(&self, name: &str) -> bool {
        let included = (self.include_prefixes.is_empty() && self.include_patterns.is_empty())
            || self
                .include_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
            || self.include_patterns.iter().any(|p| glob_match(p, name));
        included
            && !self
                .exclude_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
            && !self.exclude_patterns.iter().any(|p| glob_match(p, name))
    }

    /// The prefixes to list: every include prefix that no other include prefix covers, or
    /// the whole container (`None`) when include patterns (which can match anywhere) or no
    /// include prefixes are given. Listing by prefix keeps a narrow selection from reading
    /// the whole container.
    pub fn listing_prefixes(&self) -> Vec<Option<String>> {
        if self.include_prefixes.is_empty() || !self.include_patterns.is_empty() {
            return vec![None];
        }
        let mut prefixes: Vec<&String> = self.include_prefixes.iter().collect();
        prefixes.sort();
        prefixes.dedup();
        let mut kept: Vec<String> = Vec::new();
        for p in prefixes {
            if p.is_empty() {
                return vec![None];
            }
            if !kept.iter().any(|k| p.starts_with(k.as_str())) {
                kept.push(p.clone());
            }
        }
        kept.into_iter().map(Some).collect()
    }

    pub fn validate(&self) -> Result<(), String> {
        for (field, list) in [
            ("include_patterns", &self.include_patterns),
            ("exclude_patterns", &self.exclude_patterns),
        ] {
            if list.iter().any(String::is_empty) {
                return Err(format!("`{field}` has an empty pattern"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "a/b/c"));
        assert!(glob_match("raw-*", "raw-2024"));
        assert!(!glob_match("raw-*", "curated"));
        assert!(glob_match("logs-202?", "logs-2026"));
        assert!(!glob_match("logs-202?", "logs-20260"));
        assert!(glob_match("*.tmp", "a/b/c.tmp"));
        assert!(glob_match("*/_temporary/*", "out/_temporary/0/part"));
        assert!(!glob_match("*.tmp", "a.tmpx"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(glob_match("日本*", "日本/データ"));
    }

    proptest! {
        #[test]
        fn literal_patterns_match_only_themselves(a in "[a-z/. ]{0,12}", b in "[a-z/. ]{0,12}") {
            prop_assert_eq!(glob_match(&a, &b), a == b);
        }

        #[test]
        fn a_star_between_parts_matches_any_middle(pre in "[a-z]{0,5}", mid in "[a-z/]{0,8}", post in "[a-z]{0,5}") {
            let pattern = format!("{pre}*{post}");
            let text = format!("{pre}{mid}{post}");
            prop_assert!(glob_match(&pattern, &text));
        }
    }

    #[test]
    fn filters() {
        let f = BlobFilter {
            include_prefixes: vec!["sales/".into(), "hr/".into()],
            exclude_prefixes: vec!["sales/tmp/".into()],
            include_patterns: vec![],
            exclude_patterns: vec!["*.tmp".into(), "*/_SUCCESS".into()],
        };
        assert!(f.matches("sales/2024/a.parquet"));
        assert!(f.matches("hr/people.csv"));
        assert!(!f.matches("finance/a.csv"));
        assert!(!f.matches("sales/tmp/a.parquet"));
        assert!(!f.matches("sales/x.tmp"));
        assert!(!f.matches("sales/2024/_SUCCESS"));
        assert!(BlobFilter::default().matches("anything"));
    }

    #[test]
    fn listing_prefixes_cover_includes_once() {
        let f = BlobFilter {
            include_prefixes: vec!["a/b/".into(), "a/".into(), "c/".into(), "a/".into()],
            ..Default::default()
        };
        assert_eq!(
            f.listing_prefixes(),
            vec![Some("a/".to_string()), Some("c/".to_string())]
        );
        let g = BlobFilter {
            include_prefixes: vec!["a/".into()],
            include_patterns: vec!["*.csv".into()],
            ..Default::default()
        };
        assert_eq!(g.listing_prefixes(), vec![None]);
        assert_eq!(BlobFilter::default().listing_prefixes(), vec![None]);
    }
}
