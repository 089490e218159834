//! Helpers shared by the integration tests: providers pointed at the simulators.

#![allow(dead_code)]

use gleitzeit_llm::{EndpointConfig, Provider, ProviderKind};
use gleitzeit_testkit::llm::SimServer;

/// A provider for the simulator's API at its URL.
pub fn provider_for(sim: &SimServer, kind: ProviderKind) -> Provider {
    Provider::new(EndpointConfig::new("sim", sim.url(), kind)).unwrap()
}

/// A provider built from an adjusted configuration.
pub fn provider_with(
    sim: &SimServer,
    kind: ProviderKind,
    adjust: impl FnOnce(EndpointConfig) -> EndpointConfig,
) -> Provider {
    Provider::new(adjust(EndpointConfig::new("sim", sim.url(), kind))).unwrap()
}

/// A one-pixel PNG, base64.
pub const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
