#!/bin/sh
# A scripted agent for the PR/CI loop, acting as a coding agent would on
# what it is told. It records every line typed into it (.received.log in
# its worktree, untracked), and:
#  - on its first line (the task): edits, commits, pushes its branch and
#    opens a PR with GitHub's REST API ($GITHUB_API_URL, $GITHUB_TOKEN,
#    $GITHUB_REPO);
#  - on a failed check's heading (`### <name>`) in a CI failure message:
#    commits a fix and pushes;
#  - on a review comment (`- path:line ...`) in a review message: commits
#    a change and pushes.
change() {
  echo "$1" >> feature.txt
  git add feature.txt
  git -c user.email=agent@ao -c user.name=agent commit -qm "$1"
  git push -q origin HEAD 2>/dev/null && echo "pushed: $1"
}
echo "pr-bot ready"
mode=task
while true; do
  printf '> '
  IFS= read -r line || exit 0
  printf '%s\n' "$line" >> .received.log
  if [ ! -e .pr-opened ] && [ -n "$line" ]; then
    touch .pr-opened
    change "feature for $AO_SESSION_ID"
    branch=$(git rev-parse --abbrev-ref HEAD)
    code=$(curl -s -o .pr.json -w '%{http_code}' -X POST \
      -H "Authorization: Bearer $GITHUB_TOKEN" -H 'Content-Type: application/json' \
      "$GITHUB_API_URL/repos/$GITHUB_REPO/pulls" \
      -d "{\"title\":\"$AO_SESSION_ID\",\"head\":\"$branch\",\"base\":\"main\"}")
    echo "opened a PR: $code"
    continue
  fi
  # What a line means depends on the message it is in (its first line).
  case "$line" in
    *"CI failed on your PR"*) mode=ci ;;
    *"requested changes"*|*"reviewer commented"*) mode=review ;;
  esac
  case "$mode:$line" in
    "ci:### "*) change "fix for ${line#\#\#\# }" ;;
    review:"- "*:[0-9]*) change "review: ${line#- }" ;;
  esac
done
