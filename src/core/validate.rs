//! Input checks shared by every operation: text rules, identifier rules, limits.

use super::error::ChatError;

/// Longest accepted user id, client id, name or context, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest accepted conversation name or context, in characters.
pub const MAX_LABEL_CHARS: usize = 200;

/// Accepts stored-as-given text: valid UTF-8 (guaranteed by `&str`) without control
/// characters other than `\n` and `\t`, at most `max_chars` characters.
pub fn text(field: &str, value: &str, max_chars: usize) -> Result<(), ChatError> {
    if let Some(bad) = value.chars().find(|c| c.is_control() && *c != '\n' && *c != '\t') {
        return Err(ChatError::invalid(format!(
            "{field} contains a control character (U+{:04X})",
            bad as u32
        )));
    }
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(ChatError::TooLarge(format!("{field} has {chars} characters, the limit is {max_chars}")));
    }
    Ok(())
}

/// Accepts a short identifier-like string: non-empty, no control characters, not too long.
pub fn identifier(field: &str, value: &str) -> Result<(), ChatError> {
    if value.is_empty() {
        return Err(ChatError::invalid(format!("{field} must not be empty")));
    }
    label(field, value, MAX_ID_CHARS)
}

/// Accepts an optional label (name, context): no control characters, not too long.
pub fn label(field: &str, value: &str, max_chars: usize) -> Result<(), ChatError> {
    if value.chars().any(char::is_control) {
        return Err(ChatError::invalid(format!("{field} contains a control character")));
    }
    if value.chars().count() > max_chars {
        return Err(ChatError::invalid(format!("{field} is longer than {max_chars} characters")));
    }
    Ok(())
}

/// Most users one message may mention.
pub const MAX_MENTIONS: usize = 50;

/// The users a message mentions: `metadata.mentions`, an array of at most [`MAX_MENTIONS`]
/// user ids (absent: none). The key is reserved; anything else there is refused.
pub fn mentions(metadata: &serde_json::Map<String, serde_json::Value>) -> Result<Vec<&str>, ChatError> {
    let Some(value) = metadata.get("mentions") else { return Ok(Vec::new()) };
    let invalid = || {
        ChatError::invalid(format!("metadata.mentions must be an array of at most {MAX_MENTIONS} user ids"))
    };
    let list = value.as_array().filter(|list| list.len() <= MAX_MENTIONS).ok_or_else(invalid)?;
    list.iter()
        .map(|id| {
            let id = id.as_str().ok_or_else(invalid)?;
            identifier("metadata.mentions[]", id)?;
            Ok(id)
        })
        .collect()
}

/// The users a message mentions: `mentions` when given (at most [`MAX_MENTIONS`] user ids),
/// else `metadata.mentions` (see [`mentions`]).
pub fn message_mentions(
    mentions: Option<Vec<String>>,
    metadata: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<String>, ChatError> {
    let from_metadata: Vec<String> = self::mentions(metadata)?.into_iter().map(str::to_owned).collect();
    let Some(list) = mentions else { return Ok(from_metadata) };
    if list.len() > MAX_MENTIONS {
        return Err(ChatError::invalid(format!("mentions: at most {MAX_MENTIONS} user ids")));
    }
    for id in &list {
        identifier("mentions[]", id)?;
    }
    Ok(list)
}

/// Longest `:shortcode:` reaction, in characters.
pub const MAX_SHORTCODE_CHARS: usize = 32;

/// A reaction: one emoji (a single extended grapheme cluster, not a lone letter, digit, ASCII
/// sign or whitespace, at most 64 bytes) or a `:shortcode:` of lower-case letters, digits, `_`, `+` and `-`, at most
/// [`MAX_SHORTCODE_CHARS`] characters with its colons.
pub fn emoji(emoji: &str) -> Result<(), ChatError> {
    use unicode_segmentation::UnicodeSegmentation;
    let invalid = || {
        ChatError::invalid(format!(
            "emoji must be one emoji or a :shortcode: of at most {MAX_SHORTCODE_CHARS} characters"
        ))
    };
    if let Some(name) = emoji.strip_prefix(':').and_then(|rest| rest.strip_suffix(':')) {
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '+' | '-');
        return if !name.is_empty()
            && emoji.chars().count() <= MAX_SHORTCODE_CHARS
            && name.chars().all(allowed)
        {
            Ok(())
        } else {
            Err(invalid())
        };
    }
    let mut clusters = emoji.graphemes(true);
    let (Some(cluster), None) = (clusters.next(), clusters.next()) else { return Err(invalid()) };
    let first = cluster.chars().next().ok_or_else(invalid)?;
    // A lone letter, digit or ASCII sign is text; a keycap (`1️⃣`) starts with a digit but is
    // a sequence.
    let lone = cluster.chars().nth(1).is_none();
    if first.is_whitespace() || first.is_control() || (lone && (first.is_ascii() || first.is_alphanumeric()))
    {
        return Err(invalid());
    }
    if cluster.len() > 64 {
        return Err(invalid());
    }
    Ok(())
}

/// The metadata a message kind requires: a `location` has `latitude` (-90..=90) and
/// `longitude` (-180..=180) numbers; a `product` has `product_id`, a non-empty string of at
/// most 128 characters or a non-negative integer. Other kinds take any metadata.
pub fn kind_metadata(
    kind: crate::core::model::MessageType,
    metadata: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), ChatError> {
    use crate::core::model::MessageType;
    match kind {
        MessageType::Location => {
            for (field, bound) in [("latitude", 90.0), ("longitude", 180.0)] {
                let value = metadata.get(field).and_then(serde_json::Value::as_f64);
                if !value.is_some_and(|v| v.is_finite() && (-bound..=bound).contains(&v)) {
                    return Err(ChatError::invalid(format!(
                        "a location message needs metadata.{field}, a number from -{bound} to {bound}"
                    )));
                }
            }
            Ok(())
        }
        MessageType::Product => match metadata.get("product_id") {
            Some(serde_json::Value::String(id)) if !id.is_empty() && id.chars().count() <= MAX_ID_CHARS => {
                Ok(())
            }
            Some(serde_json::Value::Number(id)) if id.is_u64() => Ok(()),
            _ => Err(ChatError::invalid(
                "a product message needs metadata.product_id, a string of 1 to 128 characters or a non-negative integer",
            )),
        },
        _ => Ok(()),
    }
}

/// A page size: `None` → `default`; 1..=`max` accepted; larger values are capped at `max`.
pub fn page_limit(limit: Option<i64>, default: usize, max: usize) -> Result<usize, ChatError> {
    match limit {
        None => Ok(default),
        Some(n) if n < 1 => Err(ChatError::invalid("limit must be at least 1")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(max).min(max)),
    }
}

/// A seq bound from a client: not negative.
pub fn seq(field: &str, value: i64) -> Result<i64, ChatError> {
    if value < 0 {
        return Err(ChatError::invalid(format!("{field} must not be negative")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keeps_newlines_and_tabs_and_rejects_other_controls() {
        assert!(text("content", "a\nb\tc 안녕 🙂", 10).is_ok());
        assert_eq!(text("content", "a\rb", 10).unwrap_err().code(), "invalid");
        assert_eq!(text("content", "a\u{0}b", 10).unwrap_err().code(), "invalid");
    }

    #[test]
    fn text_limit_counts_characters_not_bytes() {
        assert!(text("content", &"가".repeat(4000), 4000).is_ok());
        assert_eq!(text("content", &"a".repeat(4001), 4000).unwrap_err().code(), "too_large");
    }

    #[test]
    fn page_limit_defaults_caps_and_rejects_zero() {
        assert_eq!(page_limit(None, 30, 100).unwrap(), 30);
        assert_eq!(page_limit(Some(500), 30, 100).unwrap(), 100);
        assert!(page_limit(Some(0), 30, 100).is_err());
    }
}

/// Refuses JSON nested deeper than `max` arrays/objects below `envelope` levels of framing
/// (a WebSocket frame's object, a Socket.IO packet's array), by a byte scan of the brackets
/// outside strings, before anything is parsed (so the parser's own recursion limit never
/// answers, and no deep value is built). Malformed JSON passes: the parser refuses it next.
pub fn json_depth(json: &[u8], max: usize, envelope: usize) -> Result<(), ChatError> {
    let limit = max.saturating_add(envelope);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(ChatError::invalid(format!("JSON nested deeper than {max} levels")));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod json_depth_tests {
    use super::json_depth;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn nesting_up_to_the_cap_passes_and_one_more_level_is_invalid() {
        assert!(json_depth(nested(32).as_bytes(), 32, 0).is_ok());
        assert!(json_depth(nested(33).as_bytes(), 32, 1).is_ok(), "one level of envelope");
        let err = json_depth(nested(33).as_bytes(), 32, 0).unwrap_err();
        assert_eq!(err.code(), "invalid");
        assert!(json_depth(br#"{"a":{"b":[1,{"c":2}]}}"#, 4, 0).is_ok());
        assert!(json_depth(br#"{"a":{"b":[1,{"c":{}}]}}"#, 5, 0).is_ok());
        assert!(json_depth(br#"{"a":{"b":[1,{"c":{}}]}}"#, 4, 0).is_err());
    }

    #[test]
    fn brackets_inside_strings_and_escaped_quotes_do_not_count() {
        let text = format!(r#"{{"content":"{} \" {}"}}"#, "[".repeat(100), "{".repeat(100));
        assert!(json_depth(text.as_bytes(), 2, 0).is_ok());
    }
}
