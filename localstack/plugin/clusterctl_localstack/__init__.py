"""LocalStack plugins for the clusterctl test harness."""
