//! Server-sent events as the providers write them, and the text chunking their deltas use.
use bytes::Bytes;
use serde_json::Value;

/// `event: NAME\ndata: JSON\n\n` (Anthropic, OpenAI Responses, MCP).
pub(crate) fn named(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `data: JSON\n\n` (OpenAI Chat Completions).
pub(crate) fn data(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// `data: TEXT\n\n` with a literal payload (`[DONE]`).
pub(crate) fn data_raw(text: &str) -> Bytes {
    Bytes::from(format!("data: {text}\n\n"))
}

/// `data: JSON\r\n\r\n` (Gemini's `alt=sse` framing uses CRLF).
pub(crate) fn data_crlf(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\r\n\r\n"))
}

/// Splits text into pieces of at most `n` characters (never inside a character), the way
/// providers stream deltas; empty text gives no pieces.
pub(crate) fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_respect_characters() {
        assert_eq!(pieces("héllo wörld", 4), ["héll", "o wö", "rld"]);
        assert!(pieces("", 4).is_empty());
        assert_eq!(pieces("日本語", 1).concat(), "日本語");
    }
}
