pub mod metrics_export;
