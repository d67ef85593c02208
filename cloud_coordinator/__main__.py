from cloud_coordinator.cli import main

main()
