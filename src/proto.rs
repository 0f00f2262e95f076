//! Wire types of event notifications (package `logical`), generated at build time from `proto/event.proto`.
//!
//! These are the frames `GET /v1/sys/events/subscribe/{eventType}` sends by default; their field numbers are
//! Vault's, so Vault subscribers decode them unchanged. The tests below pin the encoding byte for byte.

#![allow(missing_docs, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/logical.rs"));

impl EventPluginInfo {
    /// The JSON form used in CloudEvents `data.plugin_info`: snake_case names, empty fields left out (as Vault's
    /// protojson rendering does).
    pub fn to_json(&self) -> serde_json::Value {
        let fields = [
            ("mount_class", &self.mount_class),
            ("mount_accessor", &self.mount_accessor),
            ("mount_path", &self.mount_path),
            ("plugin", &self.plugin),
            ("plugin_version", &self.plugin_version),
            ("version", &self.version),
        ];
        serde_json::Value::Object(
            fields
                .into_iter()
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| (name.to_string(), serde_json::Value::String(value.clone())))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::{value::Kind, Struct, Value};

    use super::*;

    fn string(s: &str) -> Value {
        Value { kind: Some(Kind::StringValue(s.to_string())) }
    }

    #[test]
    fn field_numbers_match_vaults_event_proto() {
        let frame = EventReceived {
            event: Some(EventData { id: "i".into(), ..Default::default() }),
            namespace: "n".into(),
            event_type: "t".into(),
            plugin_info: Some(EventPluginInfo { mount_path: "m".into(), version: "2".into(), ..Default::default() }),
            sequence: 0,
        };
        // Tag bytes are (field number << 3) | 2 for length-delimited fields.
        let expected: Vec<u8> = vec![
            0x0a, 3, 0x0a, 1, b'i', // event = 1 { id = 1 }
            0x12, 1, b'n', // namespace = 2
            0x1a, 1, b't', // event_type = 3
            0x22, 6, 0x1a, 1, b'm', 0x32, 1, b'2', // plugin_info = 4 { mount_path = 3, version = 6 }
        ];
        assert_eq!(frame.encode_to_vec(), expected);

        // Vigil's extension, the cursor, is field 100 (varint): tag bytes 0xa0 0x06.
        let with_sequence = EventReceived { sequence: 300, ..frame };
        let mut expected_with = expected.clone();
        expected_with.extend([0xa0, 0x06, 0xac, 0x02]);
        assert_eq!(with_sequence.encode_to_vec(), expected_with);
    }

    #[test]
    fn metadata_round_trips_as_a_struct_of_strings() {
        let metadata = Struct {
            fields: [("path", "secret/data/foo"), ("modified", "true"), ("current_version", "2")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), string(v)))
                .collect(),
        };
        let frame = EventReceived {
            event: Some(EventData { id: "abc".into(), metadata: Some(metadata.clone()), ..Default::default() }),
            event_type: "kv-v2/data-write".into(),
            ..Default::default()
        };
        let decoded = EventReceived::decode(frame.encode_to_vec().as_slice()).expect("decode");
        assert_eq!(decoded, frame);
        assert_eq!(decoded.event.and_then(|e| e.metadata).map(|m| m.fields.len()), Some(3));
    }
}
