//! A Server-Sent Events client for the tests: reads a response body as it arrives and parses
//! the frames itself (fields, comments), so tests see exactly what went over the wire.

use std::time::Duration;

use serde_json::Value;

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// One SSE frame: its fields, and the comment lines it had.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Frame {
    /// `event:` field.
    pub event: Option<String>,
    /// `id:` field.
    pub id: Option<String>,
    /// `data:` lines joined with newlines.
    pub data: String,
    /// Comment lines (without the colon).
    pub comments: Vec<String>,
}

impl Frame {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("JSON data")
    }
}

/// An open event stream, read chunk by chunk.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    /// GETs `url` with these headers; asserts 200 and the content type.
    pub async fn open(http: &reqwest::Client, url: &str, headers: &[(&str, String)]) -> EventStream {
        let mut request = http.get(url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 200, "stream refused");
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("text/event-stream"));
        EventStream { response, buffer: String::new() }
    }

    /// The next frame, comment-only frames (keep-alives) included.
    pub async fn frame(&mut self) -> Frame {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let text: String = self.buffer.drain(..end + 2).collect();
                return parse(&text);
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("a frame within the patience")
                .expect("reading the stream")
                .expect("the stream ended");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The next frame that is an event (keep-alive comments skipped).
    pub async fn event(&mut self) -> Frame {
        loop {
            let frame = self.frame().await;
            if frame.event.is_some() || !frame.data.is_empty() {
                return frame;
            }
        }
    }

    /// Asserts that no event arrives within `within`.
    pub async fn no_event(&mut self, within: Duration) {
        if let Ok(frame) = tokio::time::timeout(within, self.event()).await {
            panic!("unexpected event {frame:?}");
        }
    }
}

/// Parses one frame (its text up to and including the blank line).
pub fn parse(text: &str) -> Frame {
    let mut frame = Frame::default();
    let mut data = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix(':') {
            frame.comments.push(comment.trim_start().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "event" => frame.event = Some(value),
            "id" => frame.id = Some(value),
            "data" => data.push(value),
            _ => {}
        }
    }
    frame.data = data.join("\n");
    frame
}
