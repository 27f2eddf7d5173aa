// Package mutexpkg holds the CloudShell package that defines the "Mutex Service" model.
//
// The sources in src/ are what Mutex_Package.zip is built from (go generate); the mock
// CloudShell server loads its Mutex Service model from the same data model, so the model
// the tests run against and the one customers import cannot drift apart.
package mutexpkg

import _ "embed"

// Names shared with the public Reservation-Mutex-Lock package. Existing Python drivers add
// services with exactly these names, so changing any of them breaks interoperability.
// They are defined here only: package mutex's DefaultServiceModel and OwnerAttribute are
// these constants, and a test checks them against the data model below. This package
// imports nothing of csmutex, so that mutex can import it.
const (
	FamilyName    = "Mutex Service Family"
	ModelName     = "Mutex Service"
	OwnerAttrName = "Mutex Owner"
)

// DataModel is the data model XML packaged in Mutex_Package.zip (with its UTF-8 BOM).
//
//go:embed src/DataModel/datamodel.xml
var DataModel []byte

// Metadata is the package metadata XML packaged in Mutex_Package.zip.
//
//go:embed src/metadata.xml
var Metadata []byte

// LegacyDataModel is the Mutex Service model as the public package defines it at its latest
// version: without the "Mutex Owner" attribute. It is not packaged; the mock loads it to
// emulate customers who installed that package.
//
//go:embed legacy/datamodel.xml
var LegacyDataModel []byte
