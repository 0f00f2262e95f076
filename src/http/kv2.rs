//! STUB: kv-v2 HTTP handlers (being written).
