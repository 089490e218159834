//! Test support for Gleitzeit: a throw-away `redis-server` on a free port ([`redis`]) and HTTP
//! servers that speak the LLM providers' APIs with programmable delays and faults ([`llm`]).
pub mod llm;
pub mod redis;
