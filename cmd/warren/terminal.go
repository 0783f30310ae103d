package main

import (
	"os"

	"golang.org/x/term"
)

// isTerminal reports whether f is a terminal: progress bars and prompts
// only go to a person.
func isTerminal(f *os.File) bool { return f != nil && term.IsTerminal(int(f.Fd())) }
