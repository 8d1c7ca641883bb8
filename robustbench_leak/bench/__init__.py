"""``rbleak bench``: attack engines (``attacks``), training throughput (``training``) and executors
(``executors``), each measured side by side in one process and written as JSON."""
