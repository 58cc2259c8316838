//! Reading the kernel command line.
//!
//! The command line is whitespace-separated words; a word is either a flag (`key`) or a
//! setting (`key=value`, the value running to the end of the word, so it may itself
//! contain `=`). Quotes are not interpreted. When a key appears more than once, the last
//! occurrence wins, so a loader or user can override an earlier default by appending.
//! This module only looks; it never allocates and never panics.

/// The value of the last `key=value` word, `None` if there is none. A bare `key` word is
/// a flag, not a value (see [`has_flag`]). A key that is empty or contains `=` or
/// whitespace never matches.
pub fn value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    if !is_valid_key(key) {
        return None;
    }
    cmdline
        .split_whitespace()
        .rev()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// Whether the word `key` appears on its own. `key=value` does not count: use
/// [`value`] for settings.
pub fn has_flag(cmdline: &str, key: &str) -> bool {
    is_valid_key(key) && cmdline.split_whitespace().any(|word| word == key)
}

fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && !key.contains('=') && !key.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINE: &str =
        "console=ttyS0  esker.selftest=power-off quiet\tesker.selftest=unmapped-read x=a=b";

    #[test]
    fn the_last_setting_wins() {
        assert_eq!(value(LINE, "esker.selftest"), Some("unmapped-read"));
        assert_eq!(value(LINE, "console"), Some("ttyS0"));
        assert_eq!(value(LINE, "x"), Some("a=b"));
    }

    #[test]
    fn keys_match_whole_words_only() {
        assert_eq!(value(LINE, "esker"), None);
        assert_eq!(value(LINE, "selftest"), None);
        assert_eq!(value(LINE, "consol"), None);
        assert_eq!(value(LINE, "quiet"), None);
        assert!(!has_flag(LINE, "qui"));
        assert!(!has_flag(LINE, "console"));
    }

    #[test]
    fn flags_are_bare_words() {
        assert!(has_flag(LINE, "quiet"));
        assert!(has_flag("quiet", "quiet"));
        assert!(!has_flag("", "quiet"));
    }

    #[test]
    fn empty_values_and_odd_keys() {
        assert_eq!(value("a= b", "a"), Some(""));
        assert_eq!(value("=x", ""), None);
        assert_eq!(value("a=b=c", "a=b"), None);
        assert!(!has_flag("a b", "a b"));
        assert!(!has_flag("x", ""));
    }

    proptest! {
        #[test]
        fn a_setting_appended_last_is_what_is_read(
            prefix in "[a-z=. ]{0,40}",
            key in "[a-z.]{1,10}",
            val in "[a-z0-9=,]{0,10}",
        ) {
            let line = format!("{prefix} {key}={val}");
            prop_assert_eq!(value(&line, &key), Some(val.as_str()));
        }

        #[test]
        fn never_panics(line in ".{0,80}", key in ".{0,10}") {
            let _ = value(&line, &key);
            let _ = has_flag(&line, &key);
        }
    }
}
