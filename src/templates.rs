//! Manifest templates (placeholder, filled in below).
