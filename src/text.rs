//! Small pieces of wording shared by the console and the command line, so that both say
//! "1 event" and "2 events" the same way.

/// `n` and the noun in the number it takes: `plural(1, "run", "runs")` is "1 run".
pub fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular_and_everything_else_plural() {
        assert_eq!(super::plural(1u32, "event", "events"), "1 event");
        assert_eq!(super::plural(0u32, "event", "events"), "0 events");
        assert_eq!(super::plural(12u32, "visible run", "visible runs"), "12 visible runs");
    }
}
