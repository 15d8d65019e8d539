from backflow_bridge.bridge import main

main()
