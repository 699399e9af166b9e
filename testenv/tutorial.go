package testenv

import _ "embed"

// TutorialSQL is the Doris tutorial's sharded employee data: databases
// emp_1 and emp_2, each with tables employees_1 and employees_2, 116 rows in
// all. It creates the databases itself.
//
//go:embed testdata/tutorial_emp.sql
var TutorialSQL string

// TutorialRows is the number of rows TutorialSQL inserts.
const TutorialRows = 116
