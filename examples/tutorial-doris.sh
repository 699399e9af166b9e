#!/bin/sh
# The job of tutorial-doris.yaml as flags. Secrets come from the environment
# (SHARDSYNC_MYSQL_PASSWORD, SHARDSYNC_DORIS_PASSWORD), never from argv.
set -eu
exec shardsync \
  --sources 'emp_[0-9]+.employees_[0-9]+' \
  --mysql "${MYSQL_HOST}:${MYSQL_PORT}" --mysql-user root --server-id 5400 \
  --sink doris --doris-fe "${DORIS_FE}" --doris-user root --doris-query "${DORIS_QUERY}" \
  --label-prefix doris_demo_emp_001 --doris-load-header timeout=600 --doris-replication 1 \
  --route 'emp_[0-9]+.employees_[0-9]+=demo.all_employees_info' \
  --name 'emp shards to Doris' --readers 2 --checkpoint-interval 10s \
  "$@"
