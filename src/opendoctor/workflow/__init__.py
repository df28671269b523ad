"""The workflow language (Mistral v2), its engine, executions and their history."""
