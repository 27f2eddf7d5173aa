package main

import "github.com/csmutex/csmutex/internal/term"

// isTerminal is term.IsTerminal, under the name run.go calls it by.
var isTerminal = term.IsTerminal
