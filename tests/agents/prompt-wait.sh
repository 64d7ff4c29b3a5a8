#!/bin/sh
# A scripted agent like an interactive coding CLI: it records its
# environment, prints a prompt, and answers every line it reads. The line
# "commit" makes it edit a file and commit it on its branch.
printf '%s\n' "AO_SESSION_ID=$AO_SESSION_ID" "AO_PROJECT_ID=$AO_PROJECT_ID" \
  "AO_ISSUE_ID=$AO_ISSUE_ID" "AO_PROMPT_FILE=$AO_PROMPT_FILE" "AO_WORKER_ID=$AO_WORKER_ID" > .agent-env
echo "agent ready in $(pwd)"
while true; do
  printf '> '
  IFS= read -r line || exit 0
  case "$line" in
    commit)
      echo "change by $AO_SESSION_ID" >> agent-change.txt
      git add agent-change.txt && git -c user.email=agent@ao -c user.name=agent commit -qm "agent change" && echo "committed"
      ;;
    *) echo "got: $line" ;;
  esac
done
