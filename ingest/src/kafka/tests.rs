//! Kafka front end unit tests.
