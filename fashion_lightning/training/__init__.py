"""Training: the one LightningModule (`module`), the Trainer's policy and precision, the project's
callbacks, fault tolerance (`resilience`), checkpoints read once (`checkpoint`) and each run's
`status.json` (`run_status`)."""
