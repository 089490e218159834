//! gleitzeit-testkit (being written).
