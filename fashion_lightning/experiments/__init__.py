"""Many fits and what they measured: `tune` and `repeat` (Optuna studies of ordinary fits,
`study`), `runs` (one table of every run) and `report` (a checkpoint's pictures and tables)."""
