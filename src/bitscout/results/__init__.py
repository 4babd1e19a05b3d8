"""Results: ranking, best-so-far, output schemas and files, reports, plots and the console."""
