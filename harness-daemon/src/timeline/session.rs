//! Reading one session file into what happened: connections, HTTP exchanges (heads, whole or
//! streamed bodies in index order, their annotations), DNS questions and the other events —
//! the raw entries grouped, nothing interpreted yet.
use super::TimelineError;
use crate::ledger::{
    blob_path, parse_line, Annotation, Body, ConnClose, ConnOpen, DnsAnswer, DnsQuery, Entry, Hash,
    Header, HttpRequest, HttpResponse, SessionOpen,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// One entry as read back, with its place in the chain.
#[derive(Debug, Clone)]
pub struct Item {
    /// `seq`.
    pub seq: u64,
    /// `ts`.
    pub ts: String,
    /// The entry hash (SHA-256 of the line).
    pub hash: Hash,
    /// `prev`: the entry hash of the entry before (or the genesis).
    pub prev: Hash,
    /// The entry.
    pub entry: Entry,
}

/// Parses complete lines (each ending in a newline) of a session file; a torn final line is
/// left out. `first_seq` is the seq the first line should hold (for error messages).
pub fn parse_lines(path: &Path, bytes: &[u8], first_seq: u64) -> Result<Vec<Item>, TimelineError> {
    let mut out = Vec::new();
    for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let Some(line) = line.strip_suffix(b"\n") else {
            break;
        };
        let l = parse_line(line).map_err(|reason| TimelineError::Entry {
            path: path.to_owned(),
            seq: first_seq + i as u64,
            reason,
        })?;
        out.push(Item {
            seq: l.seq,
            ts: l.ts,
            hash: l.hash,
            prev: l.prev,
            entry: l.entry,
        });
    }
    Ok(out)
}

/// A head (request or response) and where it was recorded.
#[derive(Debug, Clone)]
pub struct Head<T> {
    /// `seq` of the head entry.
    pub seq: u64,
    /// `ts` of the head entry.
    pub ts: String,
    /// The head.
    pub head: T,
}

/// One chunk of a streamed body.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// `seq` of the `stream_chunk` entry.
    pub seq: u64,
    /// `ts` of the entry.
    pub ts: String,
    /// The chunk's bytes.
    pub body: Body,
}

/// An HTTP body as recorded: nothing, one whole body, or a run of stream chunks.
#[derive(Debug, Clone, Default)]
pub enum BodyParts {
    /// No body entry was recorded.
    #[default]
    None,
    /// One `http_request_body` / `http_response_body`.
    Whole {
        /// `seq` of the body entry.
        seq: u64,
        /// `ts` of the body entry.
        ts: String,
        /// The bytes.
        body: Body,
        /// Trailer fields.
        trailers: Vec<Header>,
    },
    /// `stream_chunk` entries, by index.
    Streamed {
        /// Chunks by index.
        chunks: BTreeMap<u64, Chunk>,
        /// Whether the chunk marked `fin` was recorded (else the stream was cut off).
        fin: bool,
        /// Trailer fields of the last chunk.
        trailers: Vec<Header>,
    },
}

impl BodyParts {
    /// Number of bytes recorded.
    pub fn len(&self) -> u64 {
        match self {
            BodyParts::None => 0,
            BodyParts::Whole { body, .. } => body.len(),
            BodyParts::Streamed { chunks, .. } => chunks.values().map(|c| c.body.len()).sum(),
        }
    }

    /// Whether no bytes were recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the body was streamed.
    pub fn is_streamed(&self) -> bool {
        matches!(self, BodyParts::Streamed { .. })
    }

    /// Whether a streamed body ended without its `fin` chunk, or has a gap in its indexes.
    pub fn is_cut_off(&self) -> bool {
        match self {
            BodyParts::Streamed { chunks, fin, .. } => {
                !fin || chunks.keys().enumerate().any(|(i, k)| i as u64 != *k)
            }
            _ => false,
        }
    }

    /// Number of chunks (1 for a whole body, 0 for none).
    pub fn pieces(&self) -> usize {
        match self {
            BodyParts::None => 0,
            BodyParts::Whole { .. } => 1,
            BodyParts::Streamed { chunks, .. } => chunks.len(),
        }
    }

    /// `seq` and `ts` of the last entry of the body.
    pub fn end(&self) -> Option<(u64, &str)> {
        match self {
            BodyParts::None => None,
            BodyParts::Whole { seq, ts, .. } => Some((*seq, ts)),
            BodyParts::Streamed { chunks, .. } => chunks
                .values()
                .max_by_key(|c| c.seq)
                .map(|c| (c.seq, c.ts.as_str())),
        }
    }

    /// Trailer fields.
    pub fn trailers(&self) -> &[Header] {
        match self {
            BodyParts::None => &[],
            BodyParts::Whole { trailers, .. } | BodyParts::Streamed { trailers, .. } => trailers,
        }
    }

    /// The exact bytes, streamed chunks joined in index order; blobs read from `dir`.
    pub fn bytes(&self, dir: &Path) -> Result<Vec<u8>, TimelineError> {
        match self {
            BodyParts::None => Ok(Vec::new()),
            BodyParts::Whole { seq, body, .. } => body_bytes(dir, *seq, body),
            BodyParts::Streamed { chunks, .. } => {
                let mut out = Vec::new();
                for c in chunks.values() {
                    out.extend(body_bytes(dir, c.seq, &c.body)?);
                }
                Ok(out)
            }
        }
    }
}

/// The exact bytes of a body recorded in entry `seq`, reading a blob from ledger `dir`.
pub fn body_bytes(dir: &Path, seq: u64, body: &Body) -> Result<Vec<u8>, TimelineError> {
    if let Some(b) = body.inline_bytes() {
        return Ok(b);
    }
    match body {
        Body::Blob { sha256, .. } => {
            let path = blob_path(dir, sha256);
            std::fs::read(&path).map_err(|e| TimelineError::Blob {
                path,
                seq,
                reason: e.to_string(),
            })
        }
        _ => Err(TimelineError::Blob {
            path: dir.to_owned(),
            seq,
            reason: "inline base64 body does not decode".into(),
        }),
    }
}

/// An annotation and where it was recorded.
#[derive(Debug, Clone)]
pub struct Note {
    /// `seq` of the annotation entry.
    pub seq: u64,
    /// The annotation.
    pub annotation: Annotation,
}

/// One HTTP exchange: request and response, heads and bodies, and what annotations say.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Connection number.
    pub conn: u64,
    /// Exchange number within the connection.
    pub exchange: u64,
    /// The request head.
    pub request: Option<Head<HttpRequest>>,
    /// The request body.
    pub request_body: BodyParts,
    /// The response head.
    pub response: Option<Head<HttpResponse>>,
    /// The response body.
    pub response_body: BodyParts,
    /// Annotations of any entry of this exchange, in seq order.
    pub notes: Vec<Note>,
    /// Smallest seq of the exchange's own entries (not annotations).
    pub first_seq: u64,
    /// `ts` of that entry.
    pub first_ts: String,
    /// Largest seq of the exchange's own entries (not annotations).
    pub last_seq: u64,
    /// `ts` of that entry.
    pub last_ts: String,
}

impl Exchange {
    /// The data of the last annotation with `topic`, if any.
    pub fn note(&self, topic: &str) -> Option<&serde_json::Value> {
        self.notes
            .iter()
            .rev()
            .find(|n| n.annotation.topic == topic)
            .map(|n| &n.annotation.data)
    }

    /// The seq a person would say the exchange happened at: its request head (or first entry).
    pub fn seq(&self) -> u64 {
        self.request.as_ref().map_or(self.first_seq, |r| r.seq)
    }

    /// `ts` of the request head (or of the first entry).
    pub fn ts(&self) -> &str {
        self.request
            .as_ref()
            .map_or(self.first_ts.as_str(), |r| r.ts.as_str())
    }

    /// Seq of the end of the response: its last body entry, else its head, else `None`.
    pub fn response_end(&self) -> Option<u64> {
        self.response_body
            .end()
            .map(|(s, _)| s)
            .or(self.response.as_ref().map(|r| r.seq))
    }

    /// The request's URL: scheme, authority (or the connection's host), target.
    pub fn url(&self, conn: Option<&Conn>) -> String {
        let Some(r) = &self.request else {
            return String::new();
        };
        let host = r
            .head
            .authority
            .clone()
            .or_else(|| conn.and_then(|c| c.host()))
            .unwrap_or_default();
        format!("{}://{}{}", r.head.scheme, host, r.head.target)
    }
}

/// A connection: how it opened and closed.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// `seq` of `conn_open`.
    pub open_seq: Option<u64>,
    /// The `conn_open` entry.
    pub open: Option<ConnOpen>,
    /// The `conn_close` entry.
    pub close: Option<ConnClose>,
}

impl Conn {
    /// The pid that made the connection.
    pub fn pid(&self) -> Option<u32> {
        self.open.as_ref().map(|o| o.caller.pid)
    }

    /// Host name, else destination address.
    pub fn host(&self) -> Option<String> {
        let o = self.open.as_ref()?;
        Some(o.host.clone().unwrap_or_else(|| o.dst.ip().to_string()))
    }
}

/// A DNS question and its answer.
#[derive(Debug, Clone)]
pub struct Dns {
    /// The query.
    pub query: Option<Head<DnsQuery>>,
    /// The answer.
    pub answer: Option<Head<DnsAnswer>>,
}

/// A session file read and grouped.
#[derive(Debug, Clone)]
pub struct SessionLog {
    /// The session file.
    pub path: PathBuf,
    /// The ledger directory (where blobs are).
    pub dir: PathBuf,
    /// The session id (the file's stem).
    pub id: String,
    /// Every entry, in seq order.
    pub items: Vec<Item>,
    /// Connections by number.
    pub conns: BTreeMap<u64, Conn>,
    /// HTTP exchanges, in the order their first entry was recorded.
    pub exchanges: Vec<Exchange>,
    /// DNS exchanges by number.
    pub dns: BTreeMap<u64, Dns>,
    /// Index in `exchanges` of the exchange each seq belongs to.
    pub exchange_of_seq: HashMap<u64, usize>,
    /// Annotations of entries that belong to no exchange.
    pub other_notes: Vec<Note>,
    /// The session's processes.
    pub processes: super::process::Processes,
}

impl SessionLog {
    /// Reads and groups a session file.
    pub fn read(path: &Path) -> Result<SessionLog, TimelineError> {
        let bytes = std::fs::read(path).map_err(|e| TimelineError::Io {
            path: path.to_owned(),
            source: e,
        })?;
        let items = parse_lines(path, &bytes, 0)?;
        Ok(SessionLog::from_items(path, items))
    }

    /// Groups entries already read from `path`.
    pub fn from_items(path: &Path, items: Vec<Item>) -> SessionLog {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut log = SessionLog {
            path: path.to_owned(),
            dir,
            id,
            items: Vec::new(),
            conns: BTreeMap::new(),
            exchanges: Vec::new(),
            dns: BTreeMap::new(),
            exchange_of_seq: HashMap::new(),
            other_notes: Vec::new(),
            processes: super::process::Processes::from_items(&items),
        };
        let mut index: HashMap<(u64, u64), usize> = HashMap::new();
        for item in &items {
            log.group(&mut index, item);
        }
        log.items = items;
        log
    }

    fn group(&mut self, index: &mut HashMap<(u64, u64), usize>, item: &Item) {
        let (seq, ts) = (item.seq, item.ts.clone());
        let mut exchange = |log: &mut SessionLog, conn: u64, exchange: u64| -> usize {
            let i = *index.entry((conn, exchange)).or_insert_with(|| {
                log.exchanges.push(Exchange {
                    conn,
                    exchange,
                    request: None,
                    request_body: BodyParts::None,
                    response: None,
                    response_body: BodyParts::None,
                    notes: Vec::new(),
                    first_seq: seq,
                    first_ts: ts.clone(),
                    last_seq: seq,
                    last_ts: ts.clone(),
                });
                log.exchanges.len() - 1
            });
            let x = &mut log.exchanges[i];
            x.last_seq = seq;
            x.last_ts = ts.clone();
            log.exchange_of_seq.insert(seq, i);
            i
        };
        match &item.entry {
            Entry::ConnOpen(o) => {
                let c = self.conns.entry(o.conn).or_default();
                c.open_seq = Some(seq);
                c.open = Some(o.clone());
            }
            Entry::ConnClose(cl) => {
                self.conns.entry(cl.conn).or_default().close = Some(cl.clone());
            }
            Entry::HttpRequest(r) => {
                let i = exchange(self, r.conn, r.exchange);
                self.exchanges[i].request = Some(Head {
                    seq,
                    ts: ts.clone(),
                    head: r.clone(),
                });
            }
            Entry::HttpResponse(r) => {
                let i = exchange(self, r.conn, r.exchange);
                self.exchanges[i].response = Some(Head {
                    seq,
                    ts: ts.clone(),
                    head: r.clone(),
                });
            }
            Entry::HttpRequestBody(b) | Entry::HttpResponseBody(b) => {
                let i = exchange(self, b.conn, b.exchange);
                let whole = BodyParts::Whole {
                    seq,
                    ts: ts.clone(),
                    body: b.body.clone(),
                    trailers: b.trailers.clone(),
                };
                let x = &mut self.exchanges[i];
                if matches!(item.entry, Entry::HttpRequestBody(_)) {
                    x.request_body = whole;
                } else {
                    x.response_body = whole;
                }
            }
            Entry::StreamChunk(c) => {
                let i = exchange(self, c.conn, c.exchange);
                let x = &mut self.exchanges[i];
                let parts = match c.direction {
                    crate::ledger::Direction::Up => &mut x.request_body,
                    crate::ledger::Direction::Down => &mut x.response_body,
                };
                if !matches!(parts, BodyParts::Streamed { .. }) {
                    *parts = BodyParts::Streamed {
                        chunks: BTreeMap::new(),
                        fin: false,
                        trailers: Vec::new(),
                    };
                }
                if let BodyParts::Streamed {
                    chunks,
                    fin,
                    trailers,
                } = parts
                {
                    chunks.insert(
                        c.index,
                        Chunk {
                            seq,
                            ts: ts.clone(),
                            body: c.body.clone(),
                        },
                    );
                    if c.fin {
                        *fin = true;
                        trailers.clone_from(&c.trailers);
                    }
                }
            }
            Entry::DnsQuery(q) => {
                self.dns
                    .entry(q.exchange)
                    .or_insert(Dns {
                        query: None,
                        answer: None,
                    })
                    .query = Some(Head {
                    seq,
                    ts: ts.clone(),
                    head: q.clone(),
                });
            }
            Entry::DnsAnswer(a) => {
                self.dns
                    .entry(a.exchange)
                    .or_insert(Dns {
                        query: None,
                        answer: None,
                    })
                    .answer = Some(Head {
                    seq,
                    ts: ts.clone(),
                    head: a.clone(),
                });
            }
            Entry::Annotation(a) => {
                let note = Note {
                    seq,
                    annotation: a.clone(),
                };
                match self.exchange_of_seq.get(&a.of_seq) {
                    Some(&i) => self.exchanges[i].notes.push(note),
                    None => self.other_notes.push(note),
                }
            }
            _ => {}
        }
    }

    /// The `session_open` entry.
    pub fn open(&self) -> Option<&SessionOpen> {
        self.items.first().and_then(|i| match &i.entry {
            Entry::SessionOpen(o) => Some(o),
            _ => None,
        })
    }

    /// The connection numbered `conn`.
    pub fn conn(&self, conn: u64) -> Option<&Conn> {
        self.conns.get(&conn)
    }

    /// The pid that made exchange `x`'s connection.
    pub fn pid_of(&self, x: &Exchange) -> Option<u32> {
        self.conn(x.conn).and_then(Conn::pid)
    }

    /// The item with `seq`.
    pub fn item(&self, seq: u64) -> Option<&Item> {
        // Entries are stored in seq order starting at 0.
        self.items
            .get(seq as usize)
            .filter(|i| i.seq == seq)
            .or_else(|| self.items.iter().find(|i| i.seq == seq))
    }
}

/// Microseconds since the Unix epoch of a ledger `ts`.
pub fn ts_micros(ts: &str) -> Option<i128> {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() / 1000)
}

/// Milliseconds from `a` to `b` (0 when either is unreadable or `b` is earlier).
pub fn ms_between(a: &str, b: &str) -> f64 {
    match (ts_micros(a), ts_micros(b)) {
        (Some(a), Some(b)) if b >= a => (b - a) as f64 / 1000.0,
        _ => 0.0,
    }
}
