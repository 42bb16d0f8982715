//! JSON output helpers shared by the commands.

/// `{"error":"MESSAGE"}`: what a command prints instead of its JSON when serializing fails. The
/// message is escaped by serde_json, so quotes, backslashes and newlines in it keep the output
/// one valid JSON object.
pub fn error_object(err: impl std::fmt::Display) -> String {
    let mut object = serde_json::Map::new();
    object.insert("error".into(), serde_json::Value::String(err.to_string()));
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_with_quotes_backslashes_and_newlines_stays_valid_json() {
        let message = "key \"a\\b\" must be a string\nat line 2";
        let out = error_object(message);
        let parsed: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(parsed["error"], message);
        assert_eq!(out.lines().count(), 1, "one line: {out}");
    }
}
