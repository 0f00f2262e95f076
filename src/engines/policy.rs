//! STUB: ACL policies (being written).
