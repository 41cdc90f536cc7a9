//! The envtest-convention real API server tier (filled in below the fake tier).

/// Placeholder until the real tier lands: always skipped.
pub async fn start() -> Option<()> {
    None
}
