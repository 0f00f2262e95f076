//! STUB: HTTP client for the Vault-shaped API, being written.
