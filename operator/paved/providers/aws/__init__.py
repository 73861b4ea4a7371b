"""AWS providers (boto3). Importing a provider module registers it under its provider name."""
