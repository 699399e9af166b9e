//go:build race

package doris_test

const raceEnabled = true
