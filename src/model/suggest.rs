//! "Did you mean …?": the closest known name to a misspelt one.

/// The candidate closest to `word` by edit distance, when it is close enough to be a
/// plausible typo: at most one edit for short words, a third of the length for longer
/// ones. Ties go to the first candidate in the order given.
pub(crate) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).max(1);
    let lower = word.to_lowercase();
    let mut best: Option<(usize, &'c str)> = None;
    for c in candidates {
        // Case-only differences ("CHAP" for "chap") count as one edit.
        let dist = if c.to_lowercase() == lower && c != word {
            1
        } else {
            strsim::damerau_levenshtein(word, c)
        };
        if dist == 0 || dist > limit {
            continue;
        }
        if best.is_none_or(|(d, _)| dist < d) {
            best = Some((dist, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        let keys = ["blocksize", "serial", "size", "path"];
        assert_eq!(closest("blocksise", keys), Some("blocksize"));
        assert_eq!(closest("szie", keys), Some("size"));
        assert_eq!(closest("pth", keys), Some("path"));
        assert_eq!(closest("frobnicate", keys), None);
        assert_eq!(closest("CHAP", ["chap", "none"]), Some("chap"));
        assert_eq!(closest("size", keys), None); // exact: nothing to suggest
    }
}
