package mutexpkg_test

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/csmutex/csmutex/mutexpkg"
)

// The committed zip is what customers import; it must be exactly what the sources build.
func TestCommittedZipMatchesSources(t *testing.T) {
	committed, err := os.ReadFile("Mutex_Package.zip")
	if err != nil {
		t.Fatal(err)
	}
	built, err := mutexpkg.Zip()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(committed, built) {
		t.Fatal("Mutex_Package.zip is stale: run `go generate ./mutexpkg/` and commit the result")
	}
	again, _ := mutexpkg.Zip()
	if !bytes.Equal(built, again) {
		t.Fatal("Zip is not reproducible: two builds differ")
	}
}

func TestZipLayout(t *testing.T) {
	data, err := mutexpkg.Zip()
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if f.FileInfo().IsDir() {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(rc)
		rc.Close()
		want := map[string][]byte{"DataModel/datamodel.xml": mutexpkg.DataModel, "metadata.xml": mutexpkg.Metadata}[f.Name]
		if !bytes.Equal(body, want) {
			t.Errorf("%s in zip differs from its source", f.Name)
		}
	}
	if got := strings.Join(names, ","); got != "DataModel/,DataModel/datamodel.xml,metadata.xml" {
		t.Fatalf("zip entries = %s", got)
	}
}

// dataModel is the part of CloudShell's DataModelInfo schema that interop depends on.
type dataModel struct {
	XMLName    xml.Name `xml:"DataModelInfo"`
	Attributes []struct {
		Name string `xml:"Name,attr"`
		Type string `xml:"Type,attr"`
	} `xml:"Attributes>AttributeInfo"`
	Families []struct {
		Name        string `xml:"Name,attr"`
		IsService   string `xml:"IsService,attr"`
		IsAdminOnly string `xml:"IsAdminOnly,attr"`
		Models      []struct {
			Name     string `xml:"Name,attr"`
			Attached []struct {
				Name string `xml:"Name,attr"`
			} `xml:"AttachedAttributes>AttachedAttribute"`
		} `xml:"Models>ResourceModel"`
	} `xml:"ResourceFamilies>ResourceFamily"`
}

func parseModel(t *testing.T, raw []byte) dataModel {
	t.Helper()
	if !bytes.HasPrefix(raw, []byte("\xef\xbb\xbf")) {
		t.Error("data model must start with a UTF-8 BOM, as CloudShell's own exports do")
	}
	var m dataModel
	dec := xml.NewDecoder(bytes.NewReader(bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf"))))
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("data model is not well-formed: %v", err)
	}
	return m
}

// The names must be exactly those of the public package, or legacy Python drivers and
// csmutex would add different services and never exclude each other.
func TestDataModelNames(t *testing.T) {
	m := parseModel(t, mutexpkg.DataModel)
	if len(m.Families) != 1 {
		t.Fatalf("families = %d", len(m.Families))
	}
	f := m.Families[0]
	if f.Name != mutexpkg.FamilyName || f.IsService != "true" || f.IsAdminOnly != "true" {
		t.Fatalf("family = %+v", f)
	}
	if len(f.Models) != 1 || f.Models[0].Name != mutexpkg.ModelName {
		t.Fatalf("models = %+v", f.Models)
	}
	if len(f.Models[0].Attached) != 1 || f.Models[0].Attached[0].Name != mutexpkg.OwnerAttrName {
		t.Fatalf("attached attributes = %+v", f.Models[0].Attached)
	}
	if len(m.Attributes) != 1 || m.Attributes[0].Name != mutexpkg.OwnerAttrName || m.Attributes[0].Type != "String" {
		t.Fatalf("attributes = %+v", m.Attributes)
	}

	legacy := parseModel(t, mutexpkg.LegacyDataModel)
	if legacy.Families[0].Models[0].Name != mutexpkg.ModelName || len(legacy.Families[0].Models[0].Attached) != 0 {
		t.Fatalf("legacy model = %+v", legacy.Families[0])
	}
}

// wellFormed reads every token: Unmarshal alone stops at the end of the root element and
// would accept trailing garbage.
func wellFormed(t *testing.T, name string, raw []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf"))))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("%s is not well-formed: %v", name, err)
		}
	}
}

func TestMetadataWellFormed(t *testing.T) {
	wellFormed(t, "metadata.xml", mutexpkg.Metadata)
	wellFormed(t, "datamodel.xml", mutexpkg.DataModel)
	wellFormed(t, "legacy datamodel.xml", mutexpkg.LegacyDataModel)
	var md struct {
		XMLName     xml.Name `xml:"Metadata"`
		PackageType string   `xml:"PackageType"`
	}
	if err := xml.Unmarshal(mutexpkg.Metadata, &md); err != nil {
		t.Fatalf("metadata.xml is not well-formed: %v", err)
	}
	if md.PackageType != "CloudShellPackage" {
		t.Fatalf("PackageType = %q", md.PackageType)
	}
}
