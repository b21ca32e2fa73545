//! How both backends turn search words into SQL: `LIKE` patterns and FTS5 phrases.

use crate::core::ports::INDEXED_WORD_CHARS;

/// Whether a trigram index can look `word` up (it has at least three characters).
pub(crate) fn indexed(word: &str) -> bool {
    word.chars().nth(INDEXED_WORD_CHARS - 1).is_some()
}

/// `%word%` with `\`, `%` and `_` escaped by `\` (for `LIKE … ESCAPE '\'`, PostgreSQL's
/// default escape too).
pub(crate) fn contains_pattern(word: &str) -> String {
    let mut pattern = String::with_capacity(word.len() + 2);
    pattern.push('%');
    for c in word.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// An FTS5 query requiring every word as a substring: each word a quoted phrase (inner
/// quotes doubled), joined by `AND`.
pub(crate) fn fts_all_of<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words
        .into_iter()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" AND ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(contains_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
    }

    #[test]
    fn fts_phrases_double_their_quotes() {
        assert_eq!(fts_all_of(["say\"hi", "검색을"]), "\"say\"\"hi\" AND \"검색을\"");
    }

    #[test]
    fn three_characters_are_indexed_two_are_not() {
        assert!(indexed("검색을"));
        assert!(!indexed("검색"));
        assert!(indexed("hel"));
    }
}
