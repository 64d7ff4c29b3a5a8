#!/bin/sh
# A scripted agent that works at a prompt, answering every line, until it
# is typed the line "ask": then it asks a human a yes/no question. When it
# asked (milliseconds since the epoch) goes to .asked-at, so a test can tell
# how soon the dashboard showed it.
echo "working on it"
while true; do
  printf '> '
  IFS= read -r line || exit 0
  [ "$line" = ask ] && break
  echo "got: $line"
done
date +%s%3N > .asked-at
printf 'Deploy it now? (y/n) '
IFS= read -r answer
echo "answer: $answer"
while true; do
  printf '> '
  IFS= read -r line || exit 0
  echo "got: $line"
done
