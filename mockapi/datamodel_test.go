package mockapi

import (
	"strings"
	"testing"

	"github.com/csmutex/csmutex/mutexpkg"
)

func TestParseDataModel(t *testing.T) {
	full, err := parseDataModel(mutexpkg.DataModel)
	if err != nil {
		t.Fatal(err)
	}
	if len(full) != 1 || full[0].Name != mutexpkg.ModelName || full[0].Family != mutexpkg.FamilyName {
		t.Fatalf("models %+v", full)
	}
	if a := full[0].Attributes; len(a) != 1 || a[0].Name != mutexpkg.OwnerAttrName || a[0].Default != "" || a[0].Type != "String" {
		t.Fatalf("attributes %+v", a)
	}

	legacy, err := parseDataModel(mutexpkg.LegacyDataModel)
	if err != nil {
		t.Fatal(err)
	}
	if len(legacy) != 1 || legacy[0].Name != mutexpkg.ModelName || len(legacy[0].Attributes) != 0 {
		t.Fatalf("legacy %+v", legacy)
	}
}

const dmHead = `<DataModelInfo xmlns="http://schemas.qualisystems.com/ResourceManagement/DataModelSchema.xsd">`

func TestParseDataModelDefaultsAndFamilies(t *testing.T) {
	models, err := parseDataModel([]byte(dmHead + `
  <Attributes>
    <AttributeInfo Name="Color" Type="String" DefaultValue="global" />
    <AttributeInfo Name="Size" Type="Numeric" DefaultValue="1" />
  </Attributes>
  <ResourceFamilies>
    <ResourceFamily Name="Switches" IsService="false">
      <Models><ResourceModel Name="L2 Switch" /></Models>
    </ResourceFamily>
    <ResourceFamily Name="Paint" IsService="true">
      <AttachedAttributes><AttachedAttribute Name="Color" /></AttachedAttributes>
      <AttributeValues><AttributeValue Name="Color" Value="family" /></AttributeValues>
      <Models>
        <ResourceModel Name="Red Paint">
          <AttachedAttributes><AttachedAttribute Name="Size" /></AttachedAttributes>
          <AttributeValues><AttributeValue Name="Color" Value="red" /></AttributeValues>
        </ResourceModel>
        <ResourceModel Name="Plain Paint" />
      </Models>
    </ResourceFamily>
  </ResourceFamilies>
</DataModelInfo>`))
	if err != nil {
		t.Fatal(err)
	}
	if len(models) != 2 {
		t.Fatalf("resource family must be ignored: %+v", models)
	}
	red, plain := models[0], models[1]
	if len(red.Attributes) != 2 || red.Attributes[0] != (modelAttribute{"Color", "String", "red"}) || red.Attributes[1].Default != "1" {
		t.Errorf("red %+v", red)
	}
	if len(plain.Attributes) != 1 || plain.Attributes[0].Default != "family" {
		t.Errorf("plain %+v", plain)
	}

	// Several data models merge; the server serves both.
	h := newHarness(t, WithDataModel(mutexpkg.DataModel), WithDataModel([]byte(dmHead+`<Attributes /><ResourceFamilies>
	  <ResourceFamily Name="X" IsService="true"><Models><ResourceModel Name="Other" /></Models></ResourceFamily>
	  </ResourceFamilies></DataModelInfo>`)))
	if len(h.s.loadedModels()) != 2 {
		t.Fatalf("models %+v", h.s.loadedModels())
	}
	id := h.s.CreateReservation("r", "")
	h.ok("AddServiceToReservation", addServiceBody(id, "Other", "O"))
	h.ok("AddServiceToReservation", addServiceBody(id, "Mutex Service", "M", "Mutex Owner", "me"))
}

func TestParseDataModelErrors(t *testing.T) {
	for name, c := range map[string]struct{ xml, want string }{
		"not xml":     {"garbage", "data model"},
		"wrong root":  {"<Other />", "DataModelInfo"},
		"no services": {dmHead + `<ResourceFamilies><ResourceFamily Name="F" IsService="false"><Models><ResourceModel Name="M"/></Models></ResourceFamily></ResourceFamilies></DataModelInfo>`, "no service family"},
		"undefined attribute": {dmHead + `<ResourceFamilies><ResourceFamily Name="F" IsService="true"><Models><ResourceModel Name="M">
			<AttachedAttributes><AttachedAttribute Name="Ghost"/></AttachedAttributes></ResourceModel></Models></ResourceFamily></ResourceFamilies></DataModelInfo>`, "'Ghost' attached to model 'M'"},
		"duplicate model": {dmHead + `<ResourceFamilies><ResourceFamily Name="F" IsService="true"><Models><ResourceModel Name="M"/><ResourceModel Name="M"/></Models></ResourceFamily></ResourceFamilies></DataModelInfo>`, "defined twice"},
		"unnamed model":   {dmHead + `<ResourceFamilies><ResourceFamily Name="F" IsService="true"><Models><ResourceModel/></Models></ResourceFamily></ResourceFamilies></DataModelInfo>`, "without a Name"},
	} {
		_, err := parseDataModel([]byte(c.xml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}
