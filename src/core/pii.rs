//! Optional masking of phone and bank account numbers in message content (the seeds'
//! marketplace requirement: keep trades on the platform).
//!
//! The rule, documented in `docs/protocol.md`: any run of 10 to 16 digits, where digits may
//! be separated by single spaces, dots or hyphens and an optional leading `+`, is masked by
//! replacing each digit with `*` (separators are kept). That covers Korean mobile numbers
//! (`010-1234-5678`, `01012345678`, `+82 10 1234 5678`) and bank account numbers
//! (`110-123-456789`, `3333-01-1234567`), and leaves prices, dates and short codes alone.

use std::sync::LazyLock;

use regex::Regex;

/// Digit runs with single separators; matches are maximal, so counting their digits decides.
static DIGIT_RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\d(?:[ .\-]?\d)*").expect("static pattern compiles"));

const MIN_DIGITS: usize = 10;
const MAX_DIGITS: usize = 16;

/// Returns `content` with phone and account numbers masked; borrows when nothing matched.
pub fn mask(content: &str) -> std::borrow::Cow<'_, str> {
    DIGIT_RUN.replace_all(content, |caps: &regex::Captures<'_>| {
        let run = &caps[0];
        let digits = run.chars().filter(char::is_ascii_digit).count();
        if (MIN_DIGITS..=MAX_DIGITS).contains(&digits) {
            run.chars().map(|c| if c.is_ascii_digit() { '*' } else { c }).collect()
        } else {
            run.to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn masks_phone_numbers_in_common_forms() {
        assert_eq!(mask("연락처 010-1234-5678 주세요"), "연락처 ***-****-**** 주세요");
        assert_eq!(mask("번호01012345678입니다"), "번호***********입니다");
        assert_eq!(mask("+82 10 1234 5678"), "+** ** **** ****");
    }

    #[test]
    fn masks_bank_account_numbers() {
        assert_eq!(mask("국민 110-123-456789 로 입금"), "국민 ***-***-****** 로 입금");
    }

    #[test]
    fn leaves_prices_dates_and_short_numbers_alone() {
        let text = "15,000원, 2026-11-23 3시, 네고 가능 1234";
        assert_eq!(mask(text), text);
    }
}
