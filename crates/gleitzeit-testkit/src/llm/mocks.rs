//! The per-API simulator handles ([`MockOllama`], [`MockOpenAi`], [`MockAnthropic`]): a
//! [`SimServer`] of one flavour each.

use std::io;
use std::ops::Deref;

use super::config::SimConfig;
use super::server::{Flavor, SimServer};

/// An Ollama simulator. Derefs to [`SimServer`] for control and inspection.
#[derive(Debug)]
pub struct MockOllama(SimServer);

impl MockOllama {
    /// Starts on `127.0.0.1` and a free port.
    pub async fn start(cfg: SimConfig) -> io::Result<MockOllama> {
        SimServer::start(Flavor::Ollama, cfg).await.map(MockOllama)
    }

    /// Stops the server and waits until it no longer listens.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

impl Deref for MockOllama {
    type Target = SimServer;
    fn deref(&self) -> &SimServer {
        &self.0
    }
}

/// An OpenAI-compatible simulator. Derefs to [`SimServer`] for control and inspection.
#[derive(Debug)]
pub struct MockOpenAi(SimServer);

impl MockOpenAi {
    /// Starts on `127.0.0.1` and a free port.
    pub async fn start(cfg: SimConfig) -> io::Result<MockOpenAi> {
        SimServer::start(Flavor::OpenAi, cfg).await.map(MockOpenAi)
    }

    /// Stops the server and waits until it no longer listens.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

impl Deref for MockOpenAi {
    type Target = SimServer;
    fn deref(&self) -> &SimServer {
        &self.0
    }
}

/// An Anthropic Messages simulator. Derefs to [`SimServer`] for control and inspection.
#[derive(Debug)]
pub struct MockAnthropic(SimServer);

impl MockAnthropic {
    /// Starts on `127.0.0.1` and a free port.
    pub async fn start(cfg: SimConfig) -> io::Result<MockAnthropic> {
        SimServer::start(Flavor::Anthropic, cfg)
            .await
            .map(MockAnthropic)
    }

    /// Stops the server and waits until it no longer listens.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

impl Deref for MockAnthropic {
    type Target = SimServer;
    fn deref(&self) -> &SimServer {
        &self.0
    }
}
